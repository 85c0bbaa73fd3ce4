"""The object store of the snapshots, written by the subscriber itself (no Dapr binding).

Two adapters of the ObjectStore port (statestore.subscriber.ports), picked by
``STATESTORE_OBJECTSTORE_URL`` (``open_object_store``):

- ``LocalFileObjectStore``: a folder (empty URL: ``STATESTORE_TMP_ROOT``, ./local/tmp),
  one file per key, written in place with plain system calls (a temporary file, then a
  rename: a reader never sees half a snapshot);
- ``S3ObjectStore``: an S3 bucket (``s3://bucket[/prefix]``) through obstore, the Python
  binding of the Rust ``object_store`` crate; credentials from the standard AWS sources
  (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment, a web identity or the
  instance's role), never from a file of ours.

Both fence snapshot writes (``put(..., conditional=True)``): a write lands only if the
object is still the version this writer last wrote or saw (S3: ``If-Match`` / ``If-None-Match``
on the PUT; files: the file's inode and a nanosecond mtime this writer set, compared just
before the rename, and an atomic ``link`` where the object should not exist yet). Every
call also honours its ``timeout`` (the lease holder's write window): a file write checks it
just before its rename; an S3 call is cancelled at it. bench/floors.py measures both
adapters against the binding they replace (docs/benchmarks.md, docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from statestore.core.settings import Settings
from statestore.subscriber.ports import ObjectChangedError, ObjectStore, ObjectStoreError, RememberedVersions, put_each

__all__ = ["LocalFileObjectStore", "S3ObjectStore", "open_object_store", "TEMPORARY_SUFFIX"]

TEMPORARY_SUFFIX = ".statestore-tmp"  # a file being written (listed by nobody)
_T = TypeVar("_T")


def open_object_store(settings: Settings, remembered: int = 100_000) -> ObjectStore:
    """The object store ``settings`` name (STATESTORE_OBJECTSTORE_URL and friends).

    ``remembered``: how many objects' versions a store keeps for its conditional puts."""
    url = settings.objectstore_url.strip()
    if url.startswith(("s3://", "s3a://")):
        return S3ObjectStore.from_settings(settings, remembered)
    if "://" in url and not url.startswith("file://"):
        raise ObjectStoreError(
            f"STATESTORE_OBJECTSTORE_URL={url!r}: use a folder (a path or file:///path), or s3://bucket[/prefix]"
        )
    return LocalFileObjectStore(url.removeprefix("file://") or settings.tmp_root, remembered)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _check(deadline: float | None, key: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise TimeoutError(f"the write window closed before {key} was written (not written)")


class LocalFileObjectStore:
    """Objects as files under ``root``. ``put_many`` (a flush round's snapshots) writes in
    a worker thread, beside the event loop (the system calls release the GIL); ``put``
    (an expiry marker) in the loop. A local disk: a network file system that stalls would
    hold up the flusher, use S3 there."""

    def __init__(self, root: str | os.PathLike[str], remembered: int = 100_000) -> None:
        self.root = Path(root)
        # key -> (inode, mtime ns, hash of the bytes this store wrote, or None)
        self._seen = RememberedVersions(remembered)
        self._token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.write_cpu_s = 0.0  # CPU time its writes took (statestore_snapshot_write_cpu_seconds)
        self._cpu_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalFileObjectStore({str(self.root)!r})"

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ObjectStoreError(f"object key {key!r} would leave the object-store folder")
        return os.path.join(self.root, key)

    def _error(self, exc: OSError, what: str, path: str) -> ObjectStoreError:
        return ObjectStoreError(
            f"cannot {what} {path}: {exc.strerror or exc}. The subscriber writes the snapshots under {self.root}"
            " (STATESTORE_OBJECTSTORE_URL, else STATESTORE_TMP_ROOT): make it a writable folder"
        )

    async def put(self, key: str, data: bytes, timeout: float | None = None, conditional: bool = False) -> None:
        with self._counting():
            self._put(key, data, _deadline(timeout), conditional)

    async def put_many(self, items: Sequence[tuple[str, bytes]], timeout: float | None = None) -> list[str]:
        return await asyncio.to_thread(self._put_all, items, _deadline(timeout))

    def _put_all(self, items: Sequence[tuple[str, bytes]], deadline: float | None) -> list[str]:
        refused = []
        with self._counting():
            for key, data in items:
                try:
                    self._put(key, data, deadline, conditional=True)
                except ObjectChangedError:
                    refused.append(key)
        return refused

    @contextlib.contextmanager
    def _counting(self) -> Iterator[None]:
        """Add the CPU time of the block, in this thread, to ``write_cpu_s``."""
        started = time.thread_time()
        try:
            yield
        finally:
            with self._cpu_lock:
                self.write_cpu_s += time.thread_time() - started

    def _put(self, key: str, data: bytes, deadline: float | None, conditional: bool) -> None:
        path = self._path(key)
        digest = hash(data)
        seen = self._seen.get(key)
        if conditional and seen is not None and seen[2] == digest and _version(path) == seen[:2]:
            return  # it holds these very bytes, as this store wrote them: nothing to write
        temporary = f"{path}.{self._token}{TEMPORARY_SUFFIX}"
        try:
            version = self._write_temporary(temporary, data)
            try:
                self._move_in(key, path, temporary, seen if conditional else None, conditional, deadline)
            except BaseException:
                _unlink_quietly(temporary)
                raise
        except TimeoutError:
            raise
        except OSError as exc:
            raise self._error(exc, "write the object", path) from None
        self._seen.saw(key, (*version, digest))

    @staticmethod
    def _write_temporary(temporary: str, data: bytes) -> tuple[int, int]:
        """Write ``data`` to a new file; its version: (inode, an mtime unique to this write)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            fd = os.open(temporary, flags, 0o666)
        except FileNotFoundError:  # the state's first snapshot: its folder is new
            os.makedirs(os.path.dirname(temporary), exist_ok=True)
            fd = os.open(temporary, flags, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            # A fine clock, not the file system's coarse one: two writes never share a version.
            stamp = time.time_ns()
            os.utime(fd, ns=(stamp, stamp))
            return os.fstat(fd).st_ino, stamp
        finally:
            os.close(fd)

    def _move_in(self, key: str, path: str, temporary: str, seen: Any, conditional: bool, deadline: float | None) -> None:
        """Put the written file at ``path``; conditionally: only over the version ``seen``."""
        if conditional and seen is None:  # never seen: only where nothing is (atomic)
            _check(deadline, key)
            try:
                os.link(temporary, path)
            except FileExistsError:
                self._refresh(key, path)
                raise ObjectChangedError(f"{path} exists, written by another writer") from None
            _unlink_quietly(temporary)
            return
        if conditional and _version(path) != seen[:2]:
            self._refresh(key, path)
            raise ObjectChangedError(f"{path} changed since this writer last wrote it")
        _check(deadline, key)
        os.replace(temporary, path)

    def _refresh(self, key: str, path: str) -> None:
        current = _version(path)
        self._seen.saw(key, None if current is None else (*current, None))

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._error(exc, "read the object", path) from None

    async def delete(self, key: str, timeout: float | None = None) -> None:
        path = self._path(key)
        _check(_deadline(timeout), key)
        try:
            with self._counting():
                os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            pass  # already gone (a redelivered delete): done
        except OSError as exc:
            raise self._error(exc, "delete the object", path) from None
        self._seen.saw(key, None)

    async def list(self, prefix: str) -> list[str]:
        keys = []
        for folder, _, files in os.walk(self._path(prefix)):
            relative = os.path.relpath(folder, self.root)
            keys += [f"{relative}/{name}" for name in files if not name.endswith(TEMPORARY_SUFFIX)]
        return keys

    async def remove_folders(self, folders: Iterable[str]) -> None:
        for folder in sorted(set(folders), key=lambda f: f.count("/"), reverse=True):
            try:
                os.rmdir(self._path(folder))
            except OSError:  # not empty (or gone): it stays
                pass


def _version(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return stat.st_ino, stat.st_mtime_ns


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class S3ObjectStore:
    """Objects in an S3 bucket (any S3-compatible server that honours conditional PUTs:
    AWS S3, MinIO, S3Proxy). Each call runs on obstore's own threads; the event loop
    only awaits it."""

    lanes = 32  # requests in flight in put_many

    def __init__(self, store: Any, where: str, remembered: int = 100_000) -> None:
        import obstore

        self._obstore = obstore
        self._absent = (obstore.exceptions.NotFoundError, FileNotFoundError)  # obstore raises either
        self._refused = (obstore.exceptions.AlreadyExistsError, obstore.exceptions.PreconditionError)
        self.store = store  # the obstore S3Store
        self._where = where
        self._seen = RememberedVersions(remembered)

    def __repr__(self) -> str:
        return f"S3ObjectStore({self._where})"

    @classmethod
    def from_settings(cls, settings: Settings, remembered: int = 100_000) -> S3ObjectStore:
        try:
            from obstore.store import S3Store
        except ImportError:
            raise ObjectStoreError(
                f"STATESTORE_OBJECTSTORE_URL={settings.objectstore_url!r} needs obstore: pip install 'statestore[subscriber]'"
            ) from None
        config: dict[str, Any] = {}
        endpoint = settings.objectstore_endpoint.strip()
        if endpoint:
            config["endpoint"] = endpoint
        region = settings.objectstore_region.strip() or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        config["region"] = region or "us-east-1"
        timeout = f"{max(1, round(settings.snapshot_lease_s))}s"  # a call never outlasts a lease period
        client = {"allow_http": endpoint.startswith("http://"), "timeout": timeout, "connect_timeout": "2s"}
        # Few retries, inside the call's deadline: the flusher retries a failed round itself.
        retry = {"max_retries": 2, "retry_timeout": timedelta(seconds=settings.snapshot_lease_s / 2)}
        try:
            store = S3Store.from_url(settings.objectstore_url.strip(), config=config, client_options=client, retry_config=retry)
        except Exception as exc:
            raise ObjectStoreError(f"STATESTORE_OBJECTSTORE_URL={settings.objectstore_url!r}: {exc}") from None
        where = f"{settings.objectstore_url.strip()} at {endpoint or 'AWS S3'} ({config['region']})"
        return cls(store, where, remembered)

    async def _call(self, call: Callable[[], Awaitable[_T]], timeout: float | None, what: str, key: str) -> _T:
        """``call()``, cancelled at ``timeout``; not even started when that has passed (obstore
        sends a request as soon as it is made: a cancelled one may still land, where the
        conditional put is the fence)."""
        if timeout is not None and timeout <= 0:
            raise TimeoutError(f"the write window closed before the S3 {what} of {key} (not sent)")
        try:
            return await asyncio.wait_for(call(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"S3 {what} of {key} did not finish within its window ({self._where})") from None
        except (*self._refused, *self._absent):
            raise
        except Exception as exc:
            raise ObjectStoreError(
                f"S3 {what} of {key} failed ({self._where}): {type(exc).__name__}: {_first_line(exc)}."
                " Check STATESTORE_OBJECTSTORE_URL / _ENDPOINT / _REGION and the credentials"
                " (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or the platform's role)"
            ) from None

    async def put(self, key: str, data: bytes, timeout: float | None = None, conditional: bool = False) -> None:
        obstore = self._obstore
        mode: Any = "overwrite"
        if conditional:
            etag = self._seen.get(key)
            mode = {"e_tag": etag} if etag else "create"  # If-Match, or If-None-Match: *
        try:
            result = await self._call(lambda: obstore.put_async(self.store, key, data, mode=mode), timeout, "write", key)
        except self._refused:
            self._seen.saw(key, await self._etag(key))
            raise ObjectChangedError(f"{key} changed since this writer last wrote it ({self._where})") from None
        self._seen.saw(key, result.get("e_tag"))

    async def put_many(self, items: Sequence[tuple[str, bytes]], timeout: float | None = None) -> list[str]:
        return await put_each(self, items, timeout, lanes=self.lanes)

    async def _etag(self, key: str) -> str | None:
        try:
            meta = await self._call(lambda: self._obstore.head_async(self.store, key), None, "HEAD", key)
        except self._absent:
            return None
        return meta.get("e_tag")

    async def get(self, key: str) -> bytes | None:
        try:
            result = await self._call(lambda: self._obstore.get_async(self.store, key), None, "read", key)
            return bytes(await result.bytes_async())
        except self._absent:
            return None

    async def delete(self, key: str, timeout: float | None = None) -> None:
        await self._call(lambda: self._obstore.delete_async(self.store, key), timeout, "delete", key)  # absent: no error
        self._seen.saw(key, None)

    async def list(self, prefix: str) -> list[str]:
        pages = await self._call(lambda: self._obstore.list(self.store, prefix).collect_async(), None, "list", prefix)
        return [meta["path"] for meta in pages if meta["path"].startswith(prefix)]

    async def remove_folders(self, folders: Iterable[str]) -> None:
        pass  # S3 has no folders


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]
