"""A caller app of its own (issue 15): writes one state and reports what it reads back.

Usage: python -m tests.integration.app_process STATE_ID VALUE
Prints one JSON line: the state read back and the snapshot path this app was given.
"""

import asyncio
import json
import sys

from statestore import StateStore, StateType, build_state_store_path


async def main(state_id: str, value: str) -> None:
    await StateStore.save_state_object(state_id, {"owner": value}, StateType.WORKFLOWS)
    await StateStore.save_state("progress", 100, state_id, StateType.WORKFLOWS)
    await StateStore.sync(state_id, StateType.WORKFLOWS, timeout=60)
    state = await StateStore.get_state(state_id, StateType.WORKFLOWS)
    print(json.dumps({"state": state, "path": build_state_store_path(state_id, StateType.WORKFLOWS)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
