"""List the snapshots in the object store, through a sidecar that has the binding.

Used by ``python -m statestore.publisher.keys reencrypt`` to enumerate every stored credential
without a shared index document. The object store is scoped to the subscriber, so the
tool talks to the subscriber's sidecar for this one read-only call. The binding's
``list`` answers are read by statestore.core.objectlist (both bindings' shapes).
"""

from __future__ import annotations

from statestore.core.objectlist import list_object_keys, parse_list_response
from statestore.core.paths import StateType, object_prefix, state_id_of_object_key
from statestore.core.sidecar import SidecarClient

__all__ = ["list_object_keys", "parse_list_response", "list_state_ids"]


async def list_state_ids(sidecar: SidecarClient, binding: str, state_type: StateType) -> list[str]:
    """The ids of every state of ``state_type`` that has a snapshot in the object store."""
    prefix = object_prefix(state_type)
    found = (state_id_of_object_key(key, state_type) for key in await list_object_keys(sidecar, binding, prefix))
    return sorted({id for id in found if id is not None})
