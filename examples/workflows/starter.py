"""Starting the example's workflows, once their arguments are saved: each with its id only.

`make run` (examples.workflows.__main__) and bench/workflows start them here.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from dapr.ext.workflow import DaprWorkflowClient

from examples.workflows.app import WORKFLOW_NAME

__all__ = ["SCHEDULE_ATTEMPTS", "schedule", "schedule_all"]

# Dapr's workflow engine refuses a new instance while its own sqlite file (workflowstate)
# stays locked past the component's busyTimeout, as under 32 concurrent starts on a slow
# moment of this 2-core machine (or two apps of `make run` starting 50 each on a loaded
# one): the starter starts it again rather than losing the run.
SCHEDULE_ATTEMPTS = 5


def schedule(client: DaprWorkflowClient, retries: list[int], workflow_id: str) -> None:
    """Start workflow ``workflow_id`` with its id as its only input (its arguments are in
    state), again on a busy workflow store (counted in ``retries[0]``)."""
    for attempt in range(SCHEDULE_ATTEMPTS):
        try:
            client.schedule_new_workflow(WORKFLOW_NAME, instance_id=workflow_id, input={"workflow_id": workflow_id})
            return
        except Exception as exc:  # grpc.RpcError, from the SDK's sync client
            details = str(exc)
            if attempt and "already exists" in details:
                return  # the earlier attempt did start it
            if "database is locked" not in details or attempt == SCHEDULE_ATTEMPTS - 1:
                raise
            retries[0] += 1
            time.sleep(0.5 * (attempt + 1))


async def schedule_all(client: DaprWorkflowClient, ids: list[str], in_flight: int = 16) -> int:
    """Start every workflow of ``ids`` (``in_flight`` requests at once); returns how many
    starts the workflow store refused and were made again."""
    retries = [0]
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(in_flight) as pool:
        await asyncio.gather(*(loop.run_in_executor(pool, partial(schedule, client, retries, i)) for i in ids))
    return retries[0]
