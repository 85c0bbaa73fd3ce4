"""`statestore`: one command for the operator.

    statestore get ID [--type workflows|credentials] [--app APP]
    statestore inspect ID        # the stored document: stamps, producers, snapshot
    statestore watch ID          # each change as it is applied, until Ctrl-C
    statestore stats [--metrics URL ...]   # applied/s, backlog, dead letters, parked
    statestore status [--metrics URL ...]  # can each subscriber replica apply? what to do if not
    statestore deadletter list | redrive [--all | ID ...]
    statestore keys init | rotate | reencrypt

It talks to the caller's own sidecar (DAPR_GRPC_PORT, DAPR_API_TOKEN) like an app does.
Bad input and an unreachable sidecar get a message and a non-zero exit, never a
traceback: 1 means "not found", 2 an error, 3 (status) a subscriber that cannot apply.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import sys
from collections.abc import Awaitable, Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from statestore.publisher.query import StateQueryClient
from statestore.core.document import StateDocument
from statestore.core.errors import StateStoreError
from statestore.core.paths import StateType, caller_app_name, object_key, state_key, validate_app_name
from statestore.core.settings import get_settings
from statestore.core.sidecar import SidecarClient

__all__ = ["app", "run"]

app = typer.Typer(
    name="statestore", help=__doc__.split("\n\n")[0], no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False,
)  # fmt: skip
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
_NOTHING_YET = object()
T = TypeVar("T")


class TypeChoice(str, Enum):
    workflows = "workflows"
    credentials = "credentials"


TypeOption = Annotated[TypeChoice, typer.Option("--type", "-t", help="The state type.")]
AppOption = Annotated[str | None, typer.Option("--app", help="The caller app whose state to read (default: this process's).")]


class NotFound(Exception):
    """Exit 1 with this message."""


def _command(fn: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """Run an async command; turn our errors into a message and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return asyncio.run(fn(*args, **kwargs))
        except NotFound as exc:
            err.print(f"[yellow]{exc}[/yellow]")
            raise typer.Exit(1) from None
        except (StateStoreError, ValueError) as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper


async def _document(state_id: str, state_type: StateType, app_name: str | None) -> StateDocument | None:
    sidecar = SidecarClient()
    try:
        query = StateQueryClient(sidecar, get_settings().statestore_name, app_name)
        return await query.get_document(state_id, state_type)
    finally:
        await sidecar.close()


def _app(app_name: str | None) -> str:
    return validate_app_name(app_name) if app_name is not None else caller_app_name()


@app.command()
@_command
async def get(state_id: Annotated[str, typer.Argument(metavar="ID")], type: TypeOption = TypeChoice.workflows,
              app_name: AppOption = None) -> None:  # fmt: skip
    """Print the state as JSON (exit 0), or say it was not found (exit 1)."""
    state_type = StateType(type.value)
    document = await _document(state_id, state_type, _app(app_name))
    if document is None or not document.exists():
        raise NotFound(f"no {state_type.value} state {state_id!r} in app {_app(app_name)!r}")
    out.print_json(json.dumps(document.to_state()))


def _when(wall_ms: int) -> str:
    return dt.datetime.fromtimestamp(wall_ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds")


def describe(document: StateDocument) -> dict[str, Any]:
    """The document as an operator reads it: values with the stamp that wrote them."""

    def stamp(s: Any) -> dict[str, Any] | None:
        if s is None:
            return None
        wall, logical, producer, seq, digest = s
        return {"at": _when(wall), "logical": logical, "producer": producer, "seq": seq, "digest": digest}

    return {
        "state": document.to_state() if document.exists() else None,
        "replaced": stamp(document.replaced),
        "written": stamp(document.written),
        "deleted_fields": {name: stamp(at) for name, at in document.deleted.items()},
        "fields": {name: {"value": entry.value, "written": stamp(entry.stamp)} for name, entry in document.fields.items()},
        "producers": {
            name: {"processed_upto": p.upto, "ahead": list(p.ahead), "last_event_at": _when(p.last_wall_ms)}
            for name, p in document.producers.items()
        },
    }


def _snapshot_status(state_id: str, state_type: StateType, app_name: str, state: dict[str, Any]) -> str:
    path = Path(get_settings().tmp_root) / object_key(state_id, state_type, app_name)
    if not path.parent.parent.parent.exists():
        return f"unknown: {path} is not on this machine (the object store is the subscriber's)"
    if not path.exists():
        return f"not written yet: {path}"
    try:
        written = json.loads(path.read_text())
    except ValueError:
        return f"unreadable: {path}"
    return f"up to date: {path}" if written == state else f"behind (the flusher has not caught up): {path}"


@app.command()
@_command
async def inspect(state_id: Annotated[str, typer.Argument(metavar="ID")], type: TypeOption = TypeChoice.workflows,
                  app_name: AppOption = None) -> None:  # fmt: skip
    """Print the stored document: each field's stamp, producer records, snapshot status."""
    state_type, name = StateType(type.value), _app(app_name)
    document = await _document(state_id, state_type, name)
    if document is None:
        raise NotFound(f"no {state_type.value} state {state_id!r} in app {name!r}")
    view = describe(document)
    view["key"] = state_key(state_id, state_type, name)
    view["snapshot"] = _snapshot_status(state_id, state_type, name, view["state"])
    out.print_json(json.dumps(view))


def changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    """What changed between two states, one line per field (for `watch`)."""
    before, after = before or {}, after or {}
    lines = [f"+ {k} = {json.dumps(after[k])}" for k in after if k not in before]
    lines += [f"~ {k} = {json.dumps(after[k])}" for k in after if k in before and before[k] != after[k]]
    lines += [f"- {k}" for k in before if k not in after]
    return lines


@app.command()
@_command
async def watch(state_id: Annotated[str, typer.Argument(metavar="ID")], type: TypeOption = TypeChoice.workflows,
                app_name: AppOption = None,
                interval: Annotated[float, typer.Option(help="Seconds between reads.")] = 0.2,
                count: Annotated[int, typer.Option(help="Stop after this many changes (0: never).")] = 0) -> None:  # fmt: skip
    """Print each change of the state as it is applied, until interrupted."""
    state_type, name = StateType(type.value), _app(app_name)
    sidecar = SidecarClient()
    query = StateQueryClient(sidecar, get_settings().statestore_name, name)
    seen: Any = _NOTHING_YET
    shown = 0
    out.print(f"watching {state_type.value}/{state_id} of app {name} (Ctrl-C stops)", highlight=False)
    try:
        while count == 0 or shown < count:
            document = await query.get_document(state_id, state_type)
            state = document.to_state() if document and document.exists() else None
            if state != seen:
                stamp = document.latest_stamp() if document else None
                when = _when(stamp[0]) if stamp else dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
                lines = changes(None if seen is _NOTHING_YET else seen, state) if state is not None else ["(no state)"]
                out.print(f"{when}  " + "\n".join(lines), highlight=False)
                seen, shown = state, shown + 1
            await asyncio.sleep(interval)
    finally:
        await sidecar.close()


DEFAULT_METRICS = "http://127.0.0.1:9464/metrics"


@app.command()
def stats(
    metrics: Annotated[list[str] | None, typer.Option(
        "--metrics", help=f"A subscriber's metrics URL; repeat it for each replica (summed). Default {DEFAULT_METRICS}.",
    )] = None,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between the two scrapes applied/s is taken from.")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:  # fmt: skip
    """Applied/s, deliveries in flight, snapshot backlog, dead letters and parked events, from
    the subscribers' /metrics."""
    import time

    from statestore.cli.metrics import Scrape, ScrapeError, scrape, summarize

    urls = metrics or [DEFAULT_METRICS]

    def scrape_all() -> Scrape:
        total = Scrape({})
        for url in urls:
            total = total + scrape(url)
        return total

    try:
        first, started = scrape_all(), time.monotonic()
        time.sleep(interval)
        second = scrape_all()
    except ScrapeError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    summary = summarize(first, second, time.monotonic() - started)
    if as_json:
        out.print_json(json.dumps(summary))
        return
    for name, value in summary.items():
        shown = ", ".join(f"{k}={v:g}" for k, v in value.items()) or "-" if isinstance(value, dict) else f"{value:g}"
        out.print(f"{name.replace('_', ' '):<26} {shown}", highlight=False)


DEFAULT_SIDECAR_METRICS = "http://127.0.0.1:9091/metrics"
# daprd's count of its app health probes, by the gRPC status the app answered (served as
# dapr_grpc_io_healthprobes_completed_count, a counter: the parser names it with _total).
PROBES = "dapr_grpc_io_healthprobes_completed_count_total"


@app.command()
def status(
    metrics: Annotated[list[str] | None, typer.Option(
        "--metrics", help=f"A subscriber's metrics URL (its /healthz/* are beside it); repeat it for each replica."
                          f" Default {DEFAULT_METRICS}.",
    )] = None,
    sidecar_metrics: Annotated[list[str] | None, typer.Option(
        "--sidecar-metrics", help="The metrics URL of each one's sidecar, in the same order: tells a dead app"
                                  f" from a dead pair. Default {DEFAULT_SIDECAR_METRICS} with the default --metrics.",
    )] = None,
) -> None:  # fmt: skip
    """Whether each subscriber replica can apply (the answer its sidecar's health probe gets),
    and what to do when one cannot. Exit 3 when one cannot."""
    from statestore.cli.metrics import ScrapeError, health_answer, scrape

    urls = metrics or [DEFAULT_METRICS]
    sidecars = sidecar_metrics or ([DEFAULT_SIDECAR_METRICS] if not metrics else [])
    failing = 0
    for n, url in enumerate(urls):
        ready, reason = health_answer(url.rsplit("/metrics", 1)[0] + "/healthz/ready")
        if ready:
            out.print(f"{url}: ready", highlight=False)
            continue
        failing += 1
        if ready is False:
            out.print(f"{url}: [red]unhealthy[/red]: {reason}. Its sidecar stops delivering to it (its partitions"
                      " go to the other replicas) until it is healthy again.", highlight=False)  # fmt: skip
            continue
        sidecar = sidecars[n] if n < len(sidecars) else None
        try:
            probes = scrape(sidecar).by(PROBES, "grpc_client_status") if sidecar else None
        except ScrapeError:
            probes = None
        if probes is None:
            what = "the subscriber is not running (nor, if it was given, its sidecar)"
        else:
            failed = sum(v for code, v in probes.items() if code != "OK")
            what = (f"the subscriber app is not running, but its sidecar is ({sidecar}"
                    + (f"; {failed:g} failed health probes" if failed else "")
                    + "): it holds the deliveries, events wait in the broker and nothing is lost")  # fmt: skip
        out.print(f"{url}: [red]down[/red]: {what}. Restart it: `make up` (on Kubernetes the kubelet restarts"
                  " the container).", highlight=False)  # fmt: skip
    if failing:
        raise typer.Exit(3)


deadletter = typer.Typer(help="Dead letters (kept in the state store): list, and publish again after a fix.",
                         no_args_is_help=True)  # fmt: skip
app.add_typer(deadletter, name="deadletter")


@deadletter.command("list")
def deadletter_list() -> None:
    """List dead letters, oldest first (id, time, origin topic, type, app, size, reason; never values)."""
    from statestore.subscriber.deadletter import main as deadletter_main

    raise typer.Exit(deadletter_main(["list"]))


@deadletter.command("redrive")
def deadletter_redrive(ids: Annotated[list[str] | None, typer.Argument(help="Ids from `list`.")] = None,
                       all: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False) -> None:  # fmt: skip
    """Publish dead letters again to the topic each came from, then remove them."""
    from statestore.subscriber.deadletter import main as deadletter_main

    raise typer.Exit(deadletter_main(["redrive", *(ids or []), *(["--all"] if all else [])]))


keys = typer.Typer(help="The credential keyring: create, rotate, re-encrypt.", no_args_is_help=True)
app.add_typer(keys, name="keys")


def _keys(*argv: str) -> None:
    from statestore.publisher.keys import main as keys_main

    raise typer.Exit(keys_main(list(argv)))


@keys.command("init")
def keys_init() -> None:
    """Create the local keyring file if it is missing."""
    _keys("init")


@keys.command("rotate")
def keys_rotate() -> None:
    """Add a new key and make it the active one (old keys stay for decryption)."""
    _keys("rotate")


@keys.command("reencrypt")
def keys_reencrypt() -> None:
    """Re-seal every credential that is not sealed with the active key (lists them in the
    subscriber's object store: run with its STATESTORE_OBJECTSTORE_* settings)."""
    _keys("reencrypt")


def run() -> None:
    """The console script's entry point."""
    app(prog_name="statestore")


if __name__ == "__main__":
    run()
    sys.exit(0)
