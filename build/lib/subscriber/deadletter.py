"""Inspect and re-drive the dead-letter topic.

    python -m subscriber.deadletter list             # what is there, oldest first
    python -m subscriber.deadletter redrive [--all | ID ...]

`redrive` publishes each message again to the state topic through the caller's sidecar
(DAPR_GRPC_PORT) and removes it from the dead-letter stream once published: after a fix
(a newer subscriber that understands a new schema version, say), nothing is lost.
Redis is reached at STATESTORE_REDIS_ADDRESS (default 127.0.0.1:6379); the subscriber
log says why each message was rejected.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass

import redis

from statestore.envelope import CONTENT_TYPE, EnvelopeError, read_structured
from statestore.settings import get_settings
from statestore.sidecar import SidecarClient

__all__ = ["DeadLetter", "list_dead_letters", "redrive", "main"]


@dataclass(frozen=True)
class DeadLetter:
    stream_id: str
    body: bytes

    def describe(self) -> str:
        """One line: stream id, CloudEvent id and type (read by the CloudEvents SDK), the
        app the event names, and the size. Never a value: they may be secrets."""
        try:
            ce_id, ce_type, data = read_structured(self.body)
        except EnvelopeError as exc:
            return f"{self.stream_id}  ({exc})  {len(self.body)} bytes"
        app = data.get("app", "default") if isinstance(data, dict) and "events" not in data else None
        shown = f"  app={app}" if app else ""
        return f"{self.stream_id}  id={ce_id}  type={ce_type}{shown}  {len(self.body)} bytes"


def connect() -> redis.Redis:
    host, _, port = os.environ.get("STATESTORE_REDIS_ADDRESS", "127.0.0.1:6379").partition(":")
    return redis.Redis(host=host, port=int(port or 6379))


def list_dead_letters(client: redis.Redis, topic: str | None = None) -> list[DeadLetter]:
    """Every message in the dead-letter stream, oldest first."""
    topic = topic or get_settings().deadletter_topic
    return [
        DeadLetter(stream_id.decode(), fields.get(b"data", b""))
        for stream_id, fields in client.xrange(topic, min="-", max="+")
    ]


async def redrive(client: redis.Redis, letters: list[DeadLetter], sidecar: SidecarClient) -> int:
    """Publish ``letters`` to the state topic again, then delete them; returns how many."""
    settings = get_settings()
    for letter in letters:
        await sidecar.publish(settings.pubsub_name, settings.topic, letter.body, CONTENT_TYPE)
        client.xdel(settings.deadletter_topic, letter.stream_id)
    return len(letters)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m subscriber.deadletter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list dead letters")
    again = sub.add_parser("redrive", help="publish dead letters to the state topic again")
    again.add_argument("ids", nargs="*", help="stream ids from `list` (default: none; use --all)")
    again.add_argument("--all", action="store_true", help="every dead letter")
    args = parser.parse_args(argv)
    client = connect()
    try:
        letters = list_dead_letters(client)
    except redis.ConnectionError as exc:
        print(f"error: cannot reach Redis ({exc}); start the stack (`make up`) or set STATESTORE_REDIS_ADDRESS",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.command == "list":
        for letter in letters:
            print(letter.describe())
        print(f"{len(letters)} dead letters")
        return 0
    chosen = letters if args.all else [letter for letter in letters if letter.stream_id in set(args.ids)]
    if not chosen:
        print("nothing to re-drive: give stream ids from `list`, or --all")
        return 1

    async def run() -> int:
        sidecar = SidecarClient()
        try:
            return await redrive(client, chosen, sidecar)
        finally:
            await sidecar.close()

    print(f"re-drove {asyncio.run(run())} dead letters to {get_settings().topic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
