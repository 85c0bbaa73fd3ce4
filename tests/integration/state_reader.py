"""A separate process that reads states the moment it is given their ids.

Started before the writes, so its start-up is not part of "right after": it prints
"ready", reads one line of JSON (the ids) from stdin, reads every state at once, and
prints {"states": {id: state or null}} as JSON.
"""

import asyncio
import json
import sys

from statestore import StateStore, StateType


async def main() -> None:
    await StateStore.get_state("warm-up", StateType.WORKFLOWS)  # open the channel first
    print("ready", flush=True)
    ids = json.loads(await asyncio.to_thread(sys.stdin.readline))
    states = await asyncio.gather(*(StateStore.get_state(i, StateType.WORKFLOWS) for i in ids))
    print(json.dumps({"states": dict(zip(ids, states))}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
