"""A writer process for the order tests: confirmed replaces, field updates and field
deletes of a few shared states, in a random mix, recording every event it wrote.

Usage: python -m tests.integration.mixed_writer IDS INDEX ROUNDS SEED OUT
(IDS comma-separated). Each event is appended to OUT as its JSON (the event contract) once
its call returned; then every fire-and-forget event is synced and "ok" printed. The events
are taken where StateStore hands them on (its submit, and the queue a confirmed replace's
event joins once it is stored), so the test can compute the sequential oracle from exactly
what was written.
"""

import asyncio
import random
import sys

import statestore.publisher.store as store_module
from statestore import StateStore, StateType
from statestore.core.events import encode_event

W = StateType.WORKFLOWS
written: list = []


def record_events() -> None:
    submit = store_module.StateStore._submit.__func__
    queue_stored = store_module.StateStore._queue_stored.__func__

    async def recording_submit(cls, event, stored=False):
        await submit(cls, event, stored)
        written.append(event)

    async def recording_queue_stored(cls, *events):  # a confirmed replace's event, as written
        await queue_stored(cls, *events)
        written.extend(events)

    store_module.StateStore._submit = classmethod(recording_submit)
    store_module.StateStore._queue_stored = classmethod(recording_queue_stored)


async def main(ids: list[str], index: int, rounds: int, seed: int, out: str) -> None:
    rng = random.Random(seed)
    for r in range(rounds):
        state_id = rng.choice(ids)
        roll = rng.random()
        if roll < 0.15:
            await StateStore.save_state_object(state_id, {"by": index, "round": r, "f0": [index, r]}, W)
        elif roll < 0.2:
            await StateStore.delete_field(f"f{rng.randrange(4)}", state_id, W)
        else:
            await StateStore.save_state(f"f{rng.randrange(4)}", [index, r], state_id, W)
        if rng.random() < 0.1:
            await asyncio.sleep(rng.uniform(0, 0.01))
    await StateStore.sync_many(ids, W, timeout=120)
    with open(out, "wb") as fh:
        fh.writelines(encode_event(event) + b"\n" for event in written)


if __name__ == "__main__":
    record_events()
    asyncio.run(main(sys.argv[1].split(","), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]))
    print("ok", flush=True)
