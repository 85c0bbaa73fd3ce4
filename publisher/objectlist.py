"""List the states that have a snapshot in the object store.

Used by ``python -m statestore.publisher.keys reencrypt`` to enumerate every stored
credential without a shared index document. The object store is the subscriber's
(statestore.subscriber.objectstore): the tool opens it from the same settings the
subscriber runs with (STATESTORE_OBJECTSTORE_URL, else the folder STATESTORE_TMP_ROOT).
"""

from __future__ import annotations

from statestore.core.paths import StateType, object_prefix, state_id_of_object_key
from statestore.subscriber.ports import ObjectStore

__all__ = ["list_state_ids"]


async def list_state_ids(objects: ObjectStore, state_type: StateType) -> list[str]:
    """The ids of every state of ``state_type`` that has a snapshot in ``objects``."""
    prefix = object_prefix(state_type)
    found = (state_id_of_object_key(key, state_type) for key in await objects.list(prefix))
    return sorted({id for id in found if id is not None})
