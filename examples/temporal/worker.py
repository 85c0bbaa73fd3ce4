"""The Temporal worker process: ``python -m examples.temporal.worker``.

It runs the workflow and the activities; the activities use StateStore through this
process's own Dapr sidecar (DAPR_GRPC_PORT, app id ``statestore-temporal-worker``).
TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE say where the Temporal server is. The worker must
share the starter's app name (STATESTORE_APP_NAME) to read the arguments and credentials it saved.
On SIGTERM it stops taking tasks, finishes the running ones and publishes what is queued.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

from examples.temporal.activities import ACTIVITIES
from examples.temporal.shared import task_queue
from examples.temporal.workflow import StateStoreWorkflow
from statestore import StateStore

__all__ = ["connect", "main"]


async def connect(timeout: float = 60.0) -> Client:
    """A client of the Temporal server at TEMPORAL_ADDRESS, retried while it starts."""
    address = os.environ.get("TEMPORAL_ADDRESS", "127.0.0.1:7233")
    namespace = os.environ.get("TEMPORAL_NAMESPACE", "default")
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await Client.connect(address, namespace=namespace)
        except RuntimeError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(
                    f"cannot reach the Temporal server at {address} (namespace {namespace}): {exc}. "
                    "Start it with `make up TEMPORAL=1` or set TEMPORAL_ADDRESS."
                ) from exc
            await asyncio.sleep(0.5)


async def main() -> int:
    client = await connect()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    worker = Worker(
        client,
        task_queue=task_queue(),
        workflows=[StateStoreWorkflow],
        activities=ACTIVITIES,
        max_concurrent_activities=int(os.environ.get("TEMPORAL_MAX_ACTIVITIES", "200")),
    )
    async with worker:
        ready = os.environ.get("TEMPORAL_WORKER_READY_FILE")
        if ready:
            Path(ready).write_text(str(os.getpid()))
        print(f"temporal worker: polling task queue {task_queue()!r}", flush=True)
        await stop.wait()
    await StateStore.flush()
    return 0


if __name__ == "__main__":  # the workflow sandbox re-imports modules: no work at import time
    sys.exit(asyncio.run(main()))
