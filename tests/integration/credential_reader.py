"""A separate process that reads credentials the moment it is given their guids.

Started before the save, so its start-up time is not part of "right after": it prints
"ready", reads one line of JSON (the guids) from stdin, reads every guid once at once,
and prints {"readable": n, "unreadable": [guids]} as JSON.
"""

import asyncio
import json
import sys

from statestore import SecretStore, UnknownCredentialError


async def main() -> None:
    await SecretStore.keyring()  # warm the channel and the keyring before the guids arrive
    print("ready", flush=True)
    guids = json.loads(await asyncio.to_thread(sys.stdin.readline))
    outcomes = await asyncio.gather(*(SecretStore.get_credentials(g) for g in guids), return_exceptions=True)
    unreadable = [g for g, o in zip(guids, outcomes) if isinstance(o, UnknownCredentialError)]
    errors = [repr(o) for o in outcomes if isinstance(o, BaseException) and not isinstance(o, UnknownCredentialError)]
    print(json.dumps({"readable": len(guids) - len(unreadable) - len(errors), "unreadable": unreadable,
                      "errors": errors[:5], "configs": [o for o in outcomes if isinstance(o, dict)]}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
