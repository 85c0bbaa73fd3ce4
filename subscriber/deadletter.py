"""Dead letters, kept in the state store through Dapr: listed and re-driven on any pub/sub
component (Redis Streams, Kafka, ...), never by reading a broker directly.

    statestore deadletter list                    # what is there, oldest first
    statestore deadletter redrive [--all | ID ...]
    python -m statestore.subscriber.deadletter list|redrive  # the same (an alias)

How a message gets here: the subscriber answers DROP (or daprd cannot read it), daprd
publishes it to the dead-letter topic of the component it came from, and the subscriber,
which also subscribes to that topic (raw payload: the bytes exactly as dead-lettered),
keeps each one as a record ``statestore-deadletter/{id}`` (the message, the topic and
pub/sub component it came from, the reason, the time) in the state store. ``id`` is a
digest of the message, so a redelivered dead letter is one record. The ids are listed in
``SHARDS`` index documents ``statestore-deadletter/index/{nn}``, each changed with ETags
in the transaction that adds or removes its records: no one shared document, and a
listing is one bulk read of the shards plus bulk reads of the records.

``redrive`` publishes each chosen message again, through the caller's sidecar
(DAPR_GRPC_PORT), to the topic it came from, and removes its record only once the publish
succeeded: after a fix (a newer subscriber that understands a new schema version, say),
nothing is lost. The subscriber log says why each message was rejected.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from statestore.core.cutting import cut
from statestore.core.envelope import CONTENT_TYPE, EnvelopeError, read_structured
from statestore.core.errors import StateStoreError
from statestore.core.index import IndexShard
from statestore.core.settings import Settings, get_settings
from statestore.core.sidecar import SidecarClient
from statestore.subscriber.dapr_ports import DaprStateRepository
from statestore.subscriber.ports import Delete, EtagMismatchError, StateRepository, StoredItem, Upsert

__all__ = [
    "DEADLETTER",
    "SHARDS",
    "DeadLetter",
    "DeadLetterBox",
    "Publisher",
    "letter_id",
    "dead_letter",
    "redrive",
    "main",
]

DEADLETTER = "statestore-deadletter"
SHARDS = 16
_ATTEMPTS = 50  # ETag races on a shard are rare (dead letters are); give up after this many


def letter_id(body: bytes) -> str:
    """The id of a dead letter: a digest of the message (a redelivery has the same one)."""
    return hashlib.sha256(body).hexdigest()[:32]


def record_key(id: str) -> str:
    return f"{DEADLETTER}/{id}"


def shard_key(id: str) -> str:
    """The index document listing ``id`` (ids are hex digests: their first digits spread them)."""
    return f"{DEADLETTER}/index/{int(id[:4], 16) % SHARDS:02d}"


def all_shard_keys() -> list[str]:
    return [f"{DEADLETTER}/index/{n:02d}" for n in range(SHARDS)]


class DeadLetter(BaseModel):
    """One dead letter: the message as dead-lettered, where it came from and why."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    id: str
    body: bytes = Field(description="The message exactly as it was dead-lettered (a structured CloudEvent, or not).")
    pubsub: str = Field(description="The pub/sub component it came from; redrive publishes there.")
    topic: str = Field(description="The topic it came from; redrive publishes there.")
    reason: str
    at_ms: int = Field(description="When the subscriber recorded it (wall clock, ms).")

    def describe(self) -> str:
        """One line: id, time, origin, CloudEvent id and type, the app, size and reason.
        Never a value: they may be secrets."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at_ms / 1000))
        try:
            ce_id, ce_type, data = read_structured(self.body)
            app = data.get("app", "default") if isinstance(data, dict) and "events" not in data else None
            what = f"ce_id={ce_id}  type={ce_type}" + (f"  app={app}" if app else "")
        except EnvelopeError:
            what = "not a CloudEvent"
        return f"{self.id}  {when}  {self.pubsub}/{self.topic}  {what}  {len(self.body)} bytes  reason: {self.reason}"


def origin(body: bytes, settings: Settings) -> tuple[str, str]:
    """``(pubsub, topic)`` a dead letter came from: the CloudEvent's ``topic`` attribute
    (daprd sets it when it publishes) when it names a topic the subscriber reads, else the
    event topic (a message written to the broker by hand carries none)."""
    lanes = {settings.topic: settings.pubsub_name, settings.parked_topic: settings.pubsub_name,
             settings.credentials_topic: settings.credentials_pubsub_name}  # fmt: skip
    try:
        topic = json.loads(body).get("topic")
    except (ValueError, AttributeError, RecursionError):  # not JSON, not an object, nested too deeply
        topic = None
    topic = topic if isinstance(topic, str) and topic in lanes else settings.topic
    return lanes[topic], topic


def dead_letter(body: bytes, settings: Settings, reason: str, now_ms: int | None = None) -> DeadLetter:
    """The record of a message just read from the dead-letter topic."""
    pubsub, topic = origin(body, settings)
    at_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return DeadLetter(id=letter_id(body), body=body, pubsub=pubsub, topic=topic, reason=reason, at_ms=at_ms)


def _shards(found: dict[str, StoredItem], keys: Iterable[str]) -> dict[str, IndexShard]:
    return {k: IndexShard.model_validate_json(found[k].value) if k in found else IndexShard() for k in keys}


class DeadLetterBox:
    """The dead letters in a state store (any ``StateRepository``: Dapr's or in memory)."""

    def __init__(self, repository: StateRepository, request_max_bytes: int = 2 << 20) -> None:
        self._repository = repository
        self._request_max_bytes = request_max_bytes

    async def keep(self, letters: Sequence[DeadLetter]) -> int:
        """Store ``letters`` (those already stored are left as they are); returns how many were new.

        One transaction per piece of about ``request_max_bytes`` (a delivery of 64 packed
        messages of 1 MiB would not fit the sidecar's message limit in one)."""
        unique = list({letter.id: letter for letter in letters}.values())
        pieces = cut(unique, lambda letter: len(letter.body) * 4 // 3 + 1024, self._request_max_bytes, 100)
        return sum([await self._keep(piece) for piece in pieces])

    async def _keep(self, letters: list[DeadLetter]) -> int:
        for _ in range(_ATTEMPTS):
            shard_keys = sorted({shard_key(letter.id) for letter in letters})
            found = await self._repository.load([*shard_keys, *(record_key(letter.id) for letter in letters)])
            new = [letter for letter in letters if record_key(letter.id) not in found]
            if not new:
                return 0
            shards = _shards(found, shard_keys)
            for letter in new:
                shards[shard_key(letter.id)].add(letter.id)
            writes = [Upsert(record_key(letter.id), letter.model_dump_json().encode(), None) for letter in new]
            writes += [Upsert(k, shard.model_dump_json().encode(), found[k].etag if k in found else None)
                       for k, shard in shards.items()]  # fmt: skip
            try:
                await self._repository.commit(writes)
                return len(new)
            except EtagMismatchError:
                continue  # another replica (or the other component's subscription) wrote meanwhile
        raise EtagMismatchError("the dead-letter index kept changing; the delivery will be retried")

    async def stored(self) -> list[DeadLetter]:
        """Every dead letter, oldest first."""
        found = await self._repository.load(all_shard_keys())
        ids = [id for shard in _shards(found, all_shard_keys()).values() for id in shard.ids]
        records = await self._repository.load(record_key(id) for id in ids)
        letters = [DeadLetter.model_validate_json(item.value) for item in records.values()]
        return sorted(letters, key=lambda letter: (letter.at_ms, letter.id))

    async def remove(self, ids: Iterable[str]) -> None:
        """Remove the records of ``ids`` (an id not stored is ignored)."""
        ids = set(ids)
        for _ in range(_ATTEMPTS):
            shard_keys = sorted({shard_key(id) for id in ids})
            found = await self._repository.load(shard_keys)
            shards = _shards(found, shard_keys)
            for id in ids:
                shards[shard_key(id)].remove(id)
            writes: list[Upsert | Delete] = [Delete(record_key(id)) for id in ids]
            writes += [Upsert(k, shard.model_dump_json().encode(), found[k].etag if k in found else None)
                       for k, shard in shards.items()]  # fmt: skip
            try:
                await self._repository.commit(writes)
                return
            except EtagMismatchError:
                continue
        raise EtagMismatchError("the dead-letter index kept changing; try again")


class Publisher(Protocol):
    """Publishes one message as is (SidecarClient)."""

    async def publish(self, pubsub: str, topic: str, data: bytes, content_type: str) -> None: ...


def _content_type(body: bytes) -> str:
    try:
        return CONTENT_TYPE if isinstance(json.loads(body), dict) else "application/octet-stream"
    except (ValueError, UnicodeDecodeError):
        return "application/octet-stream"


async def redrive(box: DeadLetterBox, letters: Sequence[DeadLetter], publisher: Publisher) -> int:
    """Publish each of ``letters`` to the topic it came from, then remove its record (only
    once its publish succeeded: a failure raises and leaves the rest stored). Returns how
    many were re-driven."""
    for letter in letters:
        await publisher.publish(letter.pubsub, letter.topic, letter.body, _content_type(letter.body))
        await box.remove([letter.id])
    return len(letters)


async def _run(command: str, ids: list[str], every: bool) -> int:
    settings = get_settings()
    sidecar = SidecarClient()
    try:
        box = DeadLetterBox(DaprStateRepository(sidecar, settings.statestore_name))
        letters = await box.stored()
        if command == "list":
            for letter in letters:
                print(letter.describe())
            print(f"{len(letters)} dead letters")
            return 0
        chosen = letters if every else [letter for letter in letters if letter.id in set(ids)]
        unknown = sorted(set(ids) - {letter.id for letter in letters})
        if unknown:
            print(f"error: no dead letter {', '.join(unknown)}: give ids that `list` shows", file=sys.stderr)
            return 2
        if not chosen:
            print("nothing to re-drive: give ids from `list`, or --all")
            return 1
        done = await redrive(box, chosen, sidecar)
        topics = sorted({f"{letter.pubsub}/{letter.topic}" for letter in chosen})
        print(f"re-drove {done} dead letters to {', '.join(topics)}")
        return 0
    finally:
        await sidecar.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m statestore.subscriber.deadletter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list dead letters, oldest first")
    again = sub.add_parser("redrive", help="publish dead letters again to the topic they came from")
    again.add_argument("ids", nargs="*", help="ids from `list` (default: none; use --all)")
    again.add_argument("--all", action="store_true", help="every dead letter")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_run(args.command, getattr(args, "ids", []), getattr(args, "all", False)))
    except (StateStoreError, EtagMismatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
