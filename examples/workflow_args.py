"""Workflow arguments kept in state, as the reference's apps keep them: both examples use it.

The starter (the reference's ``start_workflow``) replaces a workflow's credentials by
their guid (SecretStore), adds ``application_name`` and ``workflow_id``, saves the whole
object with ``StateStore.save_state_object`` under the workflow id, and starts the
workflow with the id only. The workflow's first activity (the reference's
``get_workflow_args``) reads them back with ``StateStore.get_state``.

No ``sync()`` between the two: ``save_state_object`` returns once the object is stored,
so ``get_state`` in any process (the worker's, through its own sidecar) returns it from
then on. A read that finds nothing is a failure the examples count, never retried away.
"""

from __future__ import annotations

import asyncio
from typing import Any

from statestore import SecretStore, StateStore, StateType
from statestore.core.paths import caller_app_name

__all__ = [
    "ARGS_NOT_FOUND",
    "DEFAULT_OUTPUT_PREFIX",
    "CredentialBatcher",
    "save_workflow_args",
    "get_workflow_args",
    "output_path",
]

W = StateType.WORKFLOWS
DEFAULT_OUTPUT_PREFIX = "output"
# The error type of a workflow whose first activity found no arguments.
ARGS_NOT_FOUND = "WorkflowArgsNotFound"


class CredentialBatcher:
    """Collects the credentials of workflows started at the same time and saves them in one
    ``SecretStore.save_secrets`` call per ``window_s`` (at most ``max_batch`` each).

    One batch of 50 costs about what one credential does (the sealed credentials go to the
    state store in one transaction, their events in one publish): 50 concurrent
    ``save_secret`` calls took 0.5 s and 71 ms of the starter's CPU, one batch 29 ms and
    9 ms (docs/examples.md#credentials).
    """

    def __init__(self, window_s: float = 0.025, max_batch: int = 50) -> None:
        self.window_s, self.max_batch = window_s, max_batch
        self.batches = self.saved = 0
        self._pending: list[tuple[dict[str, Any], asyncio.Future[str]]] = []
        self._flusher: asyncio.Task | None = None

    async def save(self, config: dict[str, Any]) -> str:
        """The guid the credential is stored under, once it is stored (readable by any process)."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append((config, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon())
        return await future

    async def replace_credentials_with_guid(self, workflow_args: dict[str, Any]) -> dict[str, Any]:
        """``statestore.replace_credentials_with_guid``, with the credential saved in a batch."""
        args = {k: v for k, v in workflow_args.items() if k != "credentials"}
        if "credentials" in workflow_args:
            args["credential_guid"] = await self.save(workflow_args["credentials"])
        return args

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.window_s)  # let other workflows' credentials join
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                guids = await SecretStore.save_secrets([config for config, _ in batch])
            except Exception as exc:  # every waiting start fails, with the reason
                for _, future in batch:
                    future.set_exception(exc)
                continue
            self.batches += 1
            self.saved += len(batch)
            for (_, future), guid in zip(batch, guids):
                future.set_result(guid)


async def save_workflow_args(workflow_id: str, job: dict[str, Any], credentials: CredentialBatcher) -> dict[str, Any]:
    """The starter's half: ``job`` with its ``credentials`` replaced by their guid, plus
    ``application_name``, ``workflow_id`` and ``output_prefix``, saved as state
    ``workflow_id`` with ``save_state_object``. Returns the saved arguments once they are
    stored: the workflow can be started at once, with its id only."""
    args = await credentials.replace_credentials_with_guid(job)
    args.update(application_name=caller_app_name(), workflow_id=workflow_id)
    args.setdefault("output_prefix", DEFAULT_OUTPUT_PREFIX)
    return await StateStore.save_state_object(workflow_id, args, W)


def output_path(args: dict[str, Any]) -> str:
    """Where a workflow writes its output: derived from its arguments, as the reference's
    ``get_workflow_args`` derives it (not stored)."""
    return f"{args.get('output_prefix', DEFAULT_OUTPUT_PREFIX)}/{args['application_name']}/{args['workflow_id']}"


async def get_workflow_args(workflow_id: str) -> dict[str, Any] | None:
    """The activity's half: the arguments saved for ``workflow_id``, read with
    ``get_state``, with ``output_path`` added; None when get_state found nothing."""
    args = await StateStore.get_state(workflow_id, W)
    if args is None:
        return None
    return {**args, "output_path": output_path(args)}
