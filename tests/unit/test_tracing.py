"""Issue 12.3: trace context from save_state through publish, apply and snapshot (in
memory: the real publisher, applier and flusher; tests/integration/test_traces.py runs
the same across the real stack)."""

from __future__ import annotations

import json
import time

import pytest
from dapr.proto.runtime.v1 import appcallback_pb2 as pb

import statestore.core.tracing as tracing
from statestore import StateStore, StateType
from statestore.publisher.pipeline import QueuedEvent, pack
from statestore.publisher.secrets import SecretStore
from statestore.testing import memory_state_store
from statestore.core.events import BATCH_TYPE, decode_events, encode_event
from statestore.core.settings import Settings
from statestore.core.tracing import MAX_LINKS, current_traceparent, format_traceparent, linked_span, parse_traceparent
from statestore.subscriber.applier import EventApplier
from statestore.subscriber.outbox import OutboxEntry, OutboxWriter, SnapshotFlusher, entry_key
from statestore.subscriber.ports import InMemoryObjectStore, InMemoryStateRepository
from statestore.subscriber.servicer import SubscriberServicer
from statestore.subscriber.tracing import JsonLinesSpanExporter, TracingConfigError, chosen_exporters, configure_tracing
from tests.strategies import field_updated
from tests.tracing import global_memory_exporter, memory_tracer, traceparent_of

W = StateType.WORKFLOWS
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def ids(span_context) -> tuple[int, int]:
    return span_context.trace_id, span_context.span_id


# -- the traceparent format ------------------------------------------------------------


def test_traceparent_round_trip_and_refusals():
    assert parse_traceparent(TP) == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 1)
    assert format_traceparent(*parse_traceparent(TP)) == TP
    assert format_traceparent(1, 2, 0) == "00-00000000000000000000000000000001-0000000000000002-00"
    for bad in [None, "", TP.upper(), TP + "\n", "ff" + TP[2:], TP.replace("0af7", "+af7"),
                "00-" + "0" * 32 + "-b7ad6b7169203331-01", TP[:36] + "0" * 16 + "-01"]:  # fmt: skip
        assert parse_traceparent(bad) is None, bad


def test_current_traceparent_is_the_current_span_sampled_or_not():
    tracer, _ = memory_tracer()
    assert current_traceparent() is None  # no span
    with tracer.start_as_current_span("caller") as span:
        assert current_traceparent() == traceparent_of(span)
        assert int(current_traceparent()[-2:], 16) & 1  # sampled (newer SDKs also set the random-id bit)
    from opentelemetry import trace

    unsampled = trace.SpanContext(5, 6, is_remote=False, trace_flags=trace.TraceFlags(0))
    with trace.use_span(trace.NonRecordingSpan(unsampled)):
        assert current_traceparent() == format_traceparent(5, 6, 0)


def test_without_opentelemetry_nothing_is_traced(monkeypatch):
    monkeypatch.setattr(tracing, "_trace", None)  # as after a failed import
    tracer, _ = memory_tracer()
    with tracer.start_as_current_span("caller"):
        assert current_traceparent() is None
    assert not tracing.otel_available()
    with tracing.publisher_span("p", [TP], {}) as span:
        assert span is None


def test_the_import_is_tried_once_and_a_missing_package_means_none(monkeypatch):
    import builtins

    real_import = builtins.__import__
    tries = []

    def no_otel(name, *args, **kwargs):
        if name.startswith("opentelemetry"):
            tries.append(name)
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(tracing, "_trace", tracing._UNSET)
    monkeypatch.setattr(builtins, "__import__", no_otel)
    assert current_traceparent() is None and current_traceparent() is None
    assert tries == ["opentelemetry"]


# -- batch spans -----------------------------------------------------------------------


def test_a_batch_span_continues_its_one_context_and_links_it():
    tracer, exporter = memory_tracer()
    with linked_span(tracer, "one", [TP, TP, None], kind="consumer"):
        pass
    (span,) = exporter.get_finished_spans()
    trace_id, span_id, _ = parse_traceparent(TP)
    assert span.parent is not None and ids(span.parent) == (trace_id, span_id)
    assert span.context.trace_id == trace_id
    assert [ids(link.context) for link in span.links] == [(trace_id, span_id)]
    assert span.attributes["statestore.trace_contexts"] == 1 and span.kind.name == "CONSUMER"


def test_a_batch_span_of_many_contexts_is_a_root_with_capped_links():
    tracer, exporter = memory_tracer()
    many = [format_traceparent(n, n, 1) for n in range(1, MAX_LINKS + 11)]
    with tracer.start_as_current_span("ambient"):  # never adopted as the parent
        with linked_span(tracer, "many", many + ["not a traceparent"]):
            pass
    span = next(s for s in exporter.get_finished_spans() if s.name == "many")
    assert span.parent is None
    assert [ids(link.context) for link in span.links] == [(n, n) for n in range(1, MAX_LINKS + 1)]
    assert span.attributes["statestore.trace_contexts"] == MAX_LINKS + 10
    assert span.attributes["statestore.links_dropped"] == 10


def test_a_batch_span_without_contexts_is_a_root_even_inside_another_span():
    tracer, exporter = memory_tracer()
    with tracer.start_as_current_span("ambient"):
        with linked_span(tracer, "none", []):
            pass
    span = next(s for s in exporter.get_finished_spans() if s.name == "none")
    assert span.parent is None and not span.links


# -- the caller: each event carries its caller's span ----------------------------------


async def test_save_state_events_carry_the_callers_span_each_its_own():
    tracer, _ = memory_tracer()
    applied = []
    with memory_state_store() as store:
        apply = store.applier.apply

        async def capture(events):
            applied.extend(events)
            return await apply(events)

        store.applier.apply = capture
        with tracer.start_as_current_span("first") as first:
            await StateStore.save_state("a", 1, "traced-1", W)
            await StateStore.save_state_object("traced-2", {"b": 2}, W)
        with tracer.start_as_current_span("second") as second:
            await StateStore.delete_field("a", "traced-1", W)
            await SecretStore.save_secret({"password": "x"})  # credential events too
        await StateStore.save_state("c", 3, "untraced", W)
        await StateStore.flush()
    by_state = {(e.state_id, e.kind): e.traceparent for e in applied}
    assert by_state[("traced-1", "field_updated")] == traceparent_of(first)
    assert by_state[("traced-2", "object_replaced")] == traceparent_of(first)
    assert by_state[("traced-1", "field_deleted")] == traceparent_of(second)
    assert [e.traceparent for e in applied if e.state_type is StateType.CREDENTIALS] == [traceparent_of(second)]
    assert by_state[("untraced", "field_updated")] is None


def test_a_packed_message_carries_each_events_own_traceparent():
    other = format_traceparent(7, 8, 0)
    events = [
        field_updated("f", 1, state_id="a").model_copy(update={"traceparent": TP}),
        field_updated("f", 2, state_id="b").model_copy(update={"traceparent": other}),
        field_updated("f", 3, state_id="c"),
    ]
    messages = pack([QueuedEvent.of(e) for e in events], 100, 1 << 20, iter(range(1, 9)))
    ((body, _),) = messages.values()
    envelope = json.loads(body)
    assert envelope["type"] == BATCH_TYPE
    assert "traceparent" not in envelope["data"]["events"][2]  # absent, not null
    decoded, reasons = decode_events(envelope["type"], envelope["data"])
    assert not reasons and [e.traceparent for e in decoded] == [TP, other, None]


async def test_the_publish_span_links_the_batchs_callers():
    exporter = global_memory_exporter()
    tracer, _ = memory_tracer()
    with memory_state_store():
        with tracer.start_as_current_span("caller") as caller:
            await StateStore.save_state("a", 1, "published", W)
        await StateStore.flush()
        await StateStore.save_state("a", 2, "published", W)  # untraced: no publish span
        await StateStore.flush()
    spans = [s for s in exporter.get_finished_spans() if s.name == "statestore.publish"]
    assert len(spans) == 1
    (span,) = spans
    context = caller.get_span_context()
    assert ids(span.parent) == ids(context) and [ids(link.context) for link in span.links] == [ids(context)]
    assert span.kind.name == "PRODUCER" and span.attributes["statestore.events"] == 1
    assert span.attributes["statestore.events_held"] == 0


# -- the subscriber: apply and snapshot spans ------------------------------------------


def entry(entry_id, events):
    data = b'{"schema_version":1,"events":[' + b",".join(encode_event(e) for e in events) + b"]}"
    return pb.TopicEventBulkRequestEntry(entry_id=entry_id, cloud_event=pb.TopicEventCERequest(id=entry_id, type=BATCH_TYPE, data=data))


def traced(event, traceparent):
    return event.model_copy(update={"traceparent": traceparent})


async def test_apply_and_snapshot_spans_continue_one_callers_trace():
    tracer, exporter = memory_tracer()
    settings = Settings()
    repo, objects = InMemoryStateRepository(), InMemoryObjectStore()
    applier = EventApplier(repo, outbox=OutboxWriter(repo, traced=True))
    servicer = SubscriberServicer(applier, settings, tracer=tracer)
    flusher = SnapshotFlusher(repo, objects, outbox=applier.outbox, tracer=tracer)
    now = int(time.time() * 1000)
    events = [traced(field_updated("f", n, state_id=f"s{n}", hlc=(now, n)), TP) for n in range(3)]
    await servicer.handle(settings.topic, [entry("m1", events[:2]), entry("m2", events[2:])])
    entries = [OutboxEntry.model_validate_json(item.value) for key, item in repo.items.items() if key.startswith(entry_key(applier.outbox.replica, 0)[:-1])]
    assert await flusher.flush_once() == 3
    apply_span = next(s for s in exporter.get_finished_spans() if s.name == "statestore.apply")
    snapshot_span = next(s for s in exporter.get_finished_spans() if s.name == "statestore.snapshot")
    trace_id, span_id, _ = parse_traceparent(TP)
    # apply: a child of the caller's span, in its trace
    assert ids(apply_span.parent) == (trace_id, span_id) and apply_span.context.trace_id == trace_id
    assert apply_span.attributes["statestore.events"] == 3 and apply_span.attributes["statestore.written"] == 3
    assert apply_span.attributes["messaging.batch.message_count"] == 2
    assert set(apply_span.attributes["statestore.state_keys"]) == {"workflows/s0", "workflows/s1", "workflows/s2"}
    # the outbox entry names the apply span, and the snapshot span continues it
    assert [e.trace for e in entries] == [format_traceparent(apply_span.context.trace_id, apply_span.context.span_id, 1)]
    assert ids(snapshot_span.parent) == ids(apply_span.context) and snapshot_span.context.trace_id == trace_id
    assert snapshot_span.attributes["statestore.states"] == 3 and snapshot_span.attributes["statestore.entries"] == 1


async def test_a_delivery_from_two_callers_links_both_and_its_snapshot_links_the_applies():
    tracer, exporter = memory_tracer()
    settings = Settings()
    repo, objects = InMemoryStateRepository(), InMemoryObjectStore()
    applier = EventApplier(repo, max_states_per_commit=1, outbox=OutboxWriter(repo, traced=True))
    servicer = SubscriberServicer(applier, settings, tracer=tracer)
    flusher = SnapshotFlusher(repo, objects, outbox=applier.outbox, tracer=tracer)
    now = int(time.time() * 1000)
    other = format_traceparent(7, 8, 1)
    await servicer.handle(settings.topic, [entry("m1", [traced(field_updated("f", 1, state_id="a", hlc=(now, 0)), TP),
                                                        traced(field_updated("f", 1, state_id="b", hlc=(now, 0)), other)])])
    await servicer.handle(settings.topic, [entry("m2", [field_updated("f", 1, state_id="c", hlc=(now, 0))])])
    assert await flusher.flush_once() == 3
    applies = [s for s in exporter.get_finished_spans() if s.name == "statestore.apply"]
    assert len(applies) == 2
    linked = applies[0]
    assert linked.parent is None  # two callers: a root that links both
    assert {ids(link.context) for link in linked.links} == {parse_traceparent(TP)[:2], (7, 8)}
    assert applies[1].parent is None and not applies[1].links  # nothing traced: a plain root
    (snapshot_span,) = [s for s in exporter.get_finished_spans() if s.name == "statestore.snapshot"]
    # both applies wrote entries (two commits of one state each, and one more): it links to each apply
    assert {ids(link.context) for link in snapshot_span.links} == {ids(a.context) for a in applies}
    assert snapshot_span.parent is None


async def test_without_a_tracer_no_span_and_no_trace_in_the_outbox():
    tracer, exporter = memory_tracer()
    settings = Settings()
    repo = InMemoryStateRepository()
    applier = EventApplier(repo)
    servicer = SubscriberServicer(applier, settings)  # tracing off
    now = int(time.time() * 1000)
    with tracer.start_as_current_span("ambient"):  # e.g. an auto-instrumented gRPC server's span
        await servicer.handle(settings.topic, [entry("m1", [traced(field_updated("f", 1, hlc=(now, 0)), TP)])])
    raw = repo.items[entry_key(applier.outbox.replica, 0)].value
    assert json.loads(raw) == {"keys": ["workflows/s1"]}  # an earlier version's reader takes it
    assert [s.name for s in exporter.get_finished_spans()] == ["ambient"]


# -- the subscriber's export settings ------------------------------------------------------


def test_exporters_follow_the_settings_and_are_off_by_default():
    assert chosen_exporters("", {}) == []
    assert chosen_exporters("/tmp/t.jsonl", {}) == ["file"]
    assert chosen_exporters("", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}) == ["otlp"]
    assert chosen_exporters("", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4317"}) == ["otlp"]
    assert chosen_exporters("f", {"OTEL_TRACES_EXPORTER": "console,none"}) == ["file", "console"]
    assert chosen_exporters("", {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) == []
    assert chosen_exporters("f", {"OTEL_SDK_DISABLED": "true"}) == []
    assert configure_tracing("", {}) is None
    with pytest.raises(TracingConfigError, match="unknown exporter 'zipkin'"):
        chosen_exporters("", {"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(TracingConfigError, match="OTLP protocol 'thrift'"):
        configure_tracing("", {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"})


def test_otlp_export_is_configured_from_the_standard_variables():
    tracing_ = configure_tracing("", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        assert tracing_.exporters == ["otlp"] and isinstance(tracing_.span_exporters[0], OTLPSpanExporter)
    finally:
        tracing_.shutdown()


def test_the_file_exporter_writes_one_json_line_per_span(tmp_path):
    path = tmp_path / "spans.jsonl"
    tracing_ = configure_tracing(str(path), {"OTEL_SERVICE_NAME": "sub-1"})
    assert tracing_.exporters == ["file"]
    with linked_span(tracing_.tracer, "statestore.apply", [TP], kind="consumer", attributes={"statestore.state_keys": ["k"]}):
        pass
    with linked_span(tracing_.tracer, "statestore.snapshot", []):
        pass
    tracing_.shutdown()  # flushes the batch processor
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["name"] for r in records] == ["statestore.apply", "statestore.snapshot"]
    apply_record = records[0]
    assert apply_record["trace_id"] == TP[3:35] and apply_record["parent_span_id"] == TP[36:52]
    assert apply_record["links"] == [{"trace_id": TP[3:35], "span_id": TP[36:52]}]
    assert apply_record["kind"] == "consumer" and apply_record["service"] == "sub-1"
    assert apply_record["attributes"]["statestore.state_keys"] == ["k"] and apply_record["end_ns"] >= apply_record["start_ns"]
    assert records[1]["parent_span_id"] is None and records[1]["links"] == []


def test_an_unwritable_trace_file_fails_the_export_not_the_subscriber(tmp_path, caplog):
    from opentelemetry.sdk.trace.export import SpanExportResult

    tracer, exporter = memory_tracer()
    with tracer.start_as_current_span("s"):
        pass
    spans = exporter.get_finished_spans()
    broken = JsonLinesSpanExporter(str(tmp_path / "missing-dir" / "spans.jsonl"))
    assert broken.export(spans) is SpanExportResult.FAILURE
    assert broken.export(spans) is SpanExportResult.FAILURE
    assert sum("cannot write spans" in r.getMessage() for r in caplog.records) == 1  # logged once


async def test_the_last_chance_drain_makes_no_span():
    from statestore.publisher.pipeline import PublishPipeline
    from tests.unit.test_pipeline import FakeTransport

    exporter = global_memory_exporter()
    transport = FakeTransport()
    pipeline = PublishPipeline(transport, Settings(pack_events=1))
    assert await pipeline.publish_all([QueuedEvent.of(traced(field_updated("f", 1), TP))]) == 0
    assert len(transport.bodies) == 1 and json.loads(transport.bodies[0])["data"]["traceparent"] == TP
    assert not exporter.get_finished_spans()  # it may run in a signal handler: no SDK locks


async def test_a_subscriber_with_a_bad_export_setting_stops_with_a_message(monkeypatch):
    import asyncio

    from statestore.core.settings import get_settings
    from statestore.subscriber.app import serve

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit, match="OTEL_TRACES_EXPORTER='jaeger': unknown exporter"):
            await serve(asyncio.Event())
    finally:
        get_settings.cache_clear()


async def test_an_apply_with_failed_states_is_an_error_span():
    from tests.unit.test_servicer import FailingFor

    tracer, exporter = memory_tracer()
    settings = Settings()
    servicer = SubscriberServicer(EventApplier(FailingFor(), max_states_per_commit=1), settings, tracer=tracer)
    now = int(time.time() * 1000)
    await servicer.handle(settings.topic, [entry("m1", [field_updated("f", 1, state_id="good", hlc=(now, 0))]),
                                           entry("m2", [traced(field_updated("f", 1, state_id="bad", hlc=(now, 0)), TP)])])
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code.name == "ERROR" and "1 states not applied" in span.status.description
    assert span.attributes["statestore.failed"] == 1 and span.attributes["statestore.written"] == 1


async def test_a_batch_handed_back_by_publish_error_is_an_error_publish_span():
    from statestore.publisher.pipeline import PublishPipeline
    from statestore.core.errors import PublishError
    from tests.unit.test_pipeline import FakeTransport

    exporter = global_memory_exporter()
    pipeline = PublishPipeline(FakeTransport(failures=1000), Settings(outage_budget_s=0, publish_backoff_ms=1, batch_window_ms=1))
    await pipeline.submit(QueuedEvent.of(traced(field_updated("f", 1), TP)))
    with pytest.raises(PublishError):
        await pipeline.flush()
    (span,) = exporter.get_finished_spans()
    assert span.name == "statestore.publish" and span.attributes["statestore.events_held"] == 1
    assert span.status.status_code.name == "ERROR" and ids(span.parent) == parse_traceparent(TP)[:2]


def test_the_last_traceparent_is_reused_only_for_the_same_span():
    tracer, _ = memory_tracer()
    with tracer.start_as_current_span("one") as one:
        assert current_traceparent() == current_traceparent() == traceparent_of(one)
        with tracer.start_as_current_span("two") as two:
            assert current_traceparent() == traceparent_of(two)
        assert current_traceparent() == traceparent_of(one)
    assert current_traceparent() is None
