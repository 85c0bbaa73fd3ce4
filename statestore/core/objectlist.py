"""List keys in the object store, through a sidecar that has the binding.

Used by ``python -m statestore.publisher.keys reencrypt`` (statestore.publisher.objectlist) to enumerate every
stored credential without a shared index document, and by the subscriber's expiry sweep
(statestore.subscriber.expiry) to enumerate the markers of a due time bucket.

Both object stores the project runs answer the binding's ``list`` operation, in
different shapes (components-contrib v1.18):

- ``bindings.localstorage`` lists the folder named by the ``fileName`` metadata and
  answers a JSON array of every file's absolute path below it, in one response;
- ``bindings.aws.s3`` takes ``{"prefix", "marker", "maxResults"}`` as data and answers
  S3's ListObjects output (``Contents[].Key``, ``IsTruncated``), a page at a time.

One request carries both (each binding ignores what the other reads).
"""

from __future__ import annotations

import json
from typing import Any

from statestore.core.errors import SidecarUnavailableError
from statestore.core.sidecar import SidecarClient

__all__ = ["list_object_keys", "parse_list_response", "PAGE"]

PAGE = 1000


def parse_list_response(raw: bytes, prefix: str) -> tuple[list[str], str | None]:
    """The keys (relative to the store's root) in one ``list`` answer, and the marker of
    the next page (None when this was the last)."""
    answer: Any = json.loads(raw or b"null")
    if answer is None:
        return [], None
    if isinstance(answer, list):  # localstorage: absolute paths of every file
        keys = []
        for path in answer:
            at = str(path).find("/" + prefix)
            if at >= 0:
                keys.append(str(path)[at + 1 :])
        return keys, None
    if isinstance(answer, dict):  # S3 ListObjects output
        keys = [item["Key"] for item in answer.get("Contents") or [] if isinstance(item, dict) and "Key" in item]
        if answer.get("IsTruncated") and keys:
            return keys, answer.get("NextMarker") or keys[-1]
        return keys, None
    raise ValueError(f"the object store's list answer is neither a list nor an object: {str(answer)[:80]!r}")


async def list_object_keys(sidecar: SidecarClient, binding: str, prefix: str) -> list[str]:
    """Every object key under ``prefix``; [] when there is none yet."""
    keys: list[str] = []
    marker = ""
    while True:
        request = json.dumps({"prefix": prefix, "marker": marker, "maxResults": PAGE}).encode()
        try:
            raw = await sidecar.invoke_binding(binding, "list", request, {"fileName": prefix})
        except SidecarUnavailableError as exc:
            if "no such file or directory" in str(exc):  # localstorage: the folder does not exist yet
                return keys
            raise
        page, next_marker = parse_list_response(raw, prefix)
        keys += page
        if next_marker is None or next_marker == marker:
            return keys
        marker = next_marker
