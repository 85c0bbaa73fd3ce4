"""Issue 12.3 across the real stack: a caller's span (an in-memory exporter in this
process) is the parent or a link of the subscriber's apply span, whose outbox entries
make the snapshot span its child or link (the subscriber's spans: its JSON-lines file)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from statestore import SecretStore, StateStore, StateType
from statestore.core.paths import object_key, state_key
from tests.integration.conftest import eventually
from tests.tracing import global_memory_exporter, memory_tracer

W = StateType.WORKFLOWS


class SpanFile:
    """The subscribers' spans file (STATESTORE_TRACE_FILE), from where it ended when the
    test began: the session's earlier tests wrote a lot to it."""

    def __init__(self, stack) -> None:
        self.path = Path(stack.extra_env["STATESTORE_TRACE_FILE"])
        self.start = self.path.stat().st_size if self.path.exists() else 0

    def spans(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as spans:
            spans.seek(self.start)
            lines = spans.read().decode().splitlines(keepends=True)
        return [json.loads(line) for line in lines if line.endswith("\n")]  # a line being written waits


@pytest.fixture
def span_file(stack) -> SpanFile:
    return SpanFile(stack)


def hex_ids(span) -> tuple[str, str]:
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def continues_or_links(record: dict, trace_id: str, span_id: str) -> bool:
    return (record["parent_trace_id"], record["parent_span_id"]) == (trace_id, span_id) or {
        "trace_id": trace_id, "span_id": span_id} in record["links"]  # fmt: skip


async def spans_for(span_file: SpanFile, name: str, trace_id: str, span_id: str, key: str) -> list[dict]:
    """The subscriber's ``name`` spans that continue or link (trace_id, span_id) and name ``key``."""

    async def found():
        return [r for r in span_file.spans() if r["name"] == name and continues_or_links(r, trace_id, span_id)
                and key in r["attributes"]["statestore.state_keys"]]  # fmt: skip

    return await eventually(found, timeout=30)


async def test_one_trace_from_save_state_through_publish_apply_and_snapshot(stack, settings, span_file):
    published = global_memory_exporter()  # the app's own OpenTelemetry setup
    tracer, caller_spans = memory_tracer()
    wf = f"traced-{uuid.uuid4().hex[:8]}"
    key = state_key(wf, W)
    with tracer.start_as_current_span("handle request") as caller:
        await StateStore.save_state("status", "running", wf, W)
        await StateStore.save_state("progress", 50, wf, W)
    await StateStore.sync(wf, W)
    trace_id, caller_id = hex_ids(caller)
    assert [s.name for s in caller_spans.get_finished_spans()] == ["handle request"]

    publish = [s for s in published.get_finished_spans() if s.name == "statestore.publish"]
    assert publish and all(f"{s.parent.span_id:016x}" == caller_id and f"{s.context.trace_id:032x}" == trace_id for s in publish)

    (apply_span, *_) = await spans_for(span_file, "statestore.apply", trace_id, caller_id, key)
    # one caller context in the delivery: the apply span continues the caller's trace
    assert apply_span["trace_id"] == trace_id and apply_span["parent_span_id"] == caller_id
    assert apply_span["kind"] == "consumer" and apply_span["service"] == "statestore-subscriber"
    assert apply_span["attributes"]["statestore.written"] >= 1 and apply_span["attributes"]["statestore.failed"] == 0
    assert apply_span["attributes"]["messaging.destination.name"] == settings.topic

    (snapshot_span, *_) = await spans_for(span_file, "statestore.snapshot", apply_span["trace_id"], apply_span["span_id"], key)
    assert snapshot_span["start_ns"] >= apply_span["start_ns"]
    assert (stack.object_root / object_key(wf, W)).exists()


async def test_each_callers_span_reaches_its_apply_span_on_both_topics(settings, span_file):
    tracer, _ = memory_tracer()
    ids = [f"traced-{n}-{uuid.uuid4().hex[:8]}" for n in range(2)]
    callers = []
    for wf in ids:  # queued back to back: the events may share a packed message
        with tracer.start_as_current_span(f"request {wf}") as caller:
            await StateStore.save_state("status", "queued", wf, W)
        callers.append(caller)
    with tracer.start_as_current_span("store credentials") as secret_caller:
        guid = await SecretStore.save_secret({"password": "s3cret"})  # returns once applied
    await StateStore.sync_many(ids, W)
    for wf, caller in zip(ids, callers):
        trace_id, span_id = hex_ids(caller)
        for apply_span in await spans_for(span_file, "statestore.apply", trace_id, span_id, state_key(wf, W)):
            # alone in its delivery: continued; with the other caller's event: a root linking both
            alone = apply_span["attributes"]["statestore.trace_contexts"] == 1
            assert apply_span["parent_span_id"] == (span_id if alone else None)
            assert {"trace_id": trace_id, "span_id": span_id} in apply_span["links"]
    (credential_apply, *_) = await spans_for(
        span_file, "statestore.apply", *hex_ids(secret_caller), state_key(guid, StateType.CREDENTIALS)
    )
    assert credential_apply["attributes"]["messaging.destination.name"] == settings.credentials_topic
    await spans_for(span_file, "statestore.snapshot", credential_apply["trace_id"], credential_apply["span_id"],
                    state_key(guid, StateType.CREDENTIALS))  # fmt: skip


async def test_untraced_writes_carry_no_context_and_apply_under_a_root_span(span_file):
    wf = f"untraced-{uuid.uuid4().hex[:8]}"
    await StateStore.save_state("status", "running", wf, W)
    await StateStore.sync(wf, W)

    async def found():
        return [r for r in span_file.spans() if r["name"] == "statestore.apply" and state_key(wf, W) in r["attributes"]["statestore.state_keys"]]

    (apply_span, *_) = await eventually(found)
    assert apply_span["parent_span_id"] is None and apply_span["links"] == []
    assert apply_span["attributes"]["statestore.trace_contexts"] == 0
