"""StateStoreClient: the reference successor's injectable state store, on statestore.

The Atlan application SDK 3.x replaces the class-method ``StateStore`` with a protocol an
app is handed (``application_sdk.infrastructure.state.StateStore``)::

    async def save(key: str, value: dict) -> None
    async def load(key: str) -> dict | None
    async def delete(key: str) -> bool
    async def list_keys(prefix: str = "") -> list[str]

``StateStoreClient`` satisfies it for one state type of one app, constructed explicitly
and holding nothing but those two: any number live side by side, and beside the
class-method API, sharing the process's runtime (producer identity, clock, sidecar
channel, own writes). Each call is one of the class-method API's:

- ``save`` is the confirmed ``save_state_object``: it returns once the object is stored;
- ``load`` is ``get_state`` (with this process's own writes merged in);
- ``delete`` is a confirmed state delete: once it returns, every process reads None; True
  when the state existed;
- ``list_keys`` is ``list_states``, every page (it needs a subscriber started with
  STATESTORE_LIST_INDEX=1, else ListingDisabledError).
"""

from __future__ import annotations

from typing import Any

from statestore.core.paths import StateType, coerce_state_type, validate_app_name, validate_id
from statestore.publisher.store import MAX_PAGE_SIZE, StateStore

__all__ = ["StateStoreClient"]


class StateStoreClient:
    """The states of one type of one app, behind the successor's four-method protocol."""

    def __init__(self, state_type: StateType = StateType.WORKFLOWS, app: str | None = None) -> None:
        """``app``: the app whose states these are (None: this process's, STATESTORE_APP_NAME
        or the Dapr app id). InvalidStateTypeError / InvalidAppNameError when either is wrong."""
        self.state_type = coerce_state_type(state_type)
        self.app = None if app is None else validate_app_name(app)

    def __repr__(self) -> str:
        return f"StateStoreClient({self.state_type.value!r}, app={self.app!r})"

    async def save(self, key: str, value: dict[str, Any]) -> None:
        """Replace state ``key`` with ``value``; returns once it is stored (any process reads it).

        InvalidValueError (``value`` not a dict of JSON), StateNotStoredError (not stored
        within STATESTORE_OUTAGE_BUDGET_S; ``.stored`` False: the stored state is unchanged)."""
        await StateStore._replace_confirmed(key, value, self.state_type, None, None, self.app)

    async def load(self, key: str) -> dict[str, Any] | None:
        """State ``key``, or None when it does not exist."""
        return await StateStore._get(validate_id(key), self.state_type, self.app)

    async def delete(self, key: str) -> bool:
        """Delete state ``key``; returns once that is stored (every process reads None),
        True when the state existed."""
        return await StateStore._delete_confirmed(key, self.state_type, app=self.app)

    async def list_keys(self, prefix: str = "") -> list[str]:
        """The keys of the states that exist, sorted, starting with ``prefix``."""
        keys: list[str] = []
        token = None
        while True:
            page = await StateStore._list(self.state_type, prefix, MAX_PAGE_SIZE, token, self.app)
            keys += page.ids
            if (token := page.next_page_token) is None:
                return keys
