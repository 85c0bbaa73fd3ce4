"""A separate producer process for concurrency tests: writes distinct fields of one state.

Usage: python -m tests.integration.producer_process STATE_ID PRODUCER_INDEX FIELDS
"""

import asyncio
import sys

from statestore import StateStore, StateType


async def main(state_id: str, index: int, fields: int) -> None:
    for j in range(fields):
        await StateStore.save_state(f"p{index:02d}-f{j:03d}", j, state_id, StateType.WORKFLOWS)
    await StateStore.sync(state_id, StateType.WORKFLOWS, timeout=60)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    print("ok", flush=True)
