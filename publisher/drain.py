"""The last-chance drain's transport: Dapr's HTTP bulk publish API, from a helper thread.

At SIGTERM, SIGINT or interpreter exit the caller's event loop is blocked (the signal
handler runs on it) or gone, and its gRPC channel may be half way through a call. The
drain therefore shares nothing with that channel: it sends what is left over plain
HTTP (``http.client``, the sidecar's ``DAPR_HTTP_PORT``), and every request's timeout
is cut to what is left of the drain's time limit, so the drain ends when it says it
does and reports exactly what it could not publish.

The requests block the drain's own private event loop on purpose: ``asyncio.to_thread``
would go through ``concurrent.futures``, whose module-wide lock the interrupted main
thread may hold (a signal landing while the caller's loop starts an executor thread,
as on its first gRPC call). Waiting on that lock deadlocked the drain until its time
ran out, losing every queued event.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections import defaultdict
from collections.abc import Sequence

from statestore.publisher.pipeline import PublishPipeline, QueuedEvent
from statestore.core.envelope import CONTENT_TYPE
from statestore.core.settings import Settings, SidecarSettings, get_sidecar_settings

__all__ = ["HttpBulkTransport", "publish_left"]


class HttpBulkTransport:
    """A pipeline transport: ``POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}`` on the sidecar."""

    def __init__(self, sidecar: SidecarSettings, pubsub: str, topic: str, deadline: float) -> None:
        self._sidecar = sidecar
        self._path = f"/v1.0-alpha1/publish/bulk/{pubsub}/{topic}"
        self._deadline = deadline  # time.monotonic() after which no request is sent
        self._headers = {"Content-Type": "application/json"}
        if sidecar.dapr_api_token:
            self._headers["dapr-api-token"] = sidecar.dapr_api_token

    def _timeout(self) -> float:
        return max(0.05, min(self._sidecar.call_timeout_s, self._deadline - time.monotonic()))

    async def publish_batch(self, cloudevents: Sequence[tuple[str, bytes, str]]) -> dict[str, str]:
        entries = [
            {"entryId": mid, "event": json.loads(body), "contentType": CONTENT_TYPE, "metadata": {"partitionKey": key}}
            for mid, body, key in cloudevents
        ]
        return self._post(json.dumps(entries).encode())  # blocking: see the module docstring

    def _post(self, body: bytes) -> dict[str, str]:
        connection = http.client.HTTPConnection(self._sidecar.sidecar_host, self._sidecar.dapr_http_port, timeout=self._timeout())
        try:
            connection.request("POST", self._path, body=body, headers=self._headers)
            response = connection.getresponse()
            text = response.read().decode(errors="replace")
        finally:
            connection.close()
        if response.status in (200, 204):
            return {}
        try:  # some entries failed: the sidecar lists them
            failed = json.loads(text).get("failedEntries") or []
            listed = {entry["entryId"]: entry.get("error", text) for entry in failed}
        except (ValueError, AttributeError, KeyError, TypeError):
            listed = {}
        if listed:
            return listed
        raise ConnectionError(f"bulk publish over HTTP answered {response.status}: {text[:300]}")

    async def wait_ready(self, timeout: float) -> bool:
        return self._port_open(min(timeout, self._timeout()))

    def _port_open(self, timeout: float) -> bool:
        try:
            with socket.create_connection((self._sidecar.sidecar_host, self._sidecar.dapr_http_port), timeout=timeout):
                return True
        except OSError:
            time.sleep(max(0.0, timeout))  # refused at once: the wait still lasts its time
            return False


async def publish_left(settings: Settings, left: list[tuple[tuple[str, str], QueuedEvent]], timeout: float) -> int:
    """Publish ``left`` ((pubsub, topic), event) within ``timeout`` s; returns how many failed."""
    deadline = time.monotonic() + timeout
    drain_settings = settings.model_copy(update={"outage_budget_s": timeout})
    by_route: dict[tuple[str, str], list[QueuedEvent]] = defaultdict(list)
    for route, queued in left:
        by_route[route].append(queued)
    lost = 0
    for (pubsub, topic), events in by_route.items():
        transport = HttpBulkTransport(get_sidecar_settings(), pubsub, topic, deadline)
        lost += await PublishPipeline(transport, drain_settings).publish_all(events)
    return lost
