"""Bad input raises before anything is queued or published (no sidecar involved)."""

import math

import pytest

from statestore import InvalidStateIdError, InvalidStateTypeError, InvalidValueError, StateStore, StateType
from statestore.publisher.store import StateStore as Store


@pytest.fixture(autouse=True)
def no_runtime():
    before = Store.runtime().loops()
    yield
    assert Store.runtime().loops() == before, "bad input must not reach the publish pipeline"


@pytest.mark.parametrize("bad_id", ["", "../etc", "a/b", "a\x00", "x" * 10_000, None])
async def test_bad_ids(bad_id):
    with pytest.raises(InvalidStateIdError):
        await StateStore.save_state("k", 1, bad_id, StateType.WORKFLOWS)
    with pytest.raises(InvalidStateIdError):
        await StateStore.save_state_object(bad_id, {}, StateType.WORKFLOWS)
    with pytest.raises(InvalidStateIdError):
        await StateStore.get_state(bad_id, StateType.WORKFLOWS)


async def test_bad_types():
    with pytest.raises(InvalidStateTypeError):
        await StateStore.save_state("k", 1, "wf", "WORKFLOWS")


@pytest.mark.parametrize("value", [{1, 2}, object(), math.nan, b"bytes", {"a": {"b": {1, 2}}}])
async def test_values_that_are_not_json(value):
    with pytest.raises(InvalidValueError, match="not JSON-serialisable"):
        await StateStore.save_state("k", value, "wf", StateType.WORKFLOWS)


async def test_deeply_nested_values_are_refused_clearly():
    value = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(InvalidValueError, match="nested too deeply"):
        await StateStore.save_state("k", value, "wf", StateType.WORKFLOWS)


@pytest.mark.parametrize("value", [[1, 2], "text", {1: "int key"}, None])
async def test_state_objects_must_be_dicts_with_string_keys(value):
    with pytest.raises(InvalidValueError, match="dict with string keys"):
        await StateStore.save_state_object("wf", value, StateType.WORKFLOWS)


@pytest.mark.parametrize("key", ["", 5, None, "k" * 2000])
async def test_field_names(key):
    with pytest.raises(InvalidValueError, match="field name"):
        await StateStore.save_state(key, 1, "wf", StateType.WORKFLOWS)


async def test_sixty_four_levels_are_fine_sixty_five_are_not():
    from statestore.publisher.values import MAX_NESTING, json_roundtrip

    value = 1
    for _ in range(MAX_NESTING):
        value = [value]
    assert json_roundtrip(value, "v", "wf") == value
    with pytest.raises(InvalidValueError, match="limit is 64 levels"):
        json_roundtrip({"a": value}, "v", "wf")


async def test_a_refused_write_takes_no_sequence_number():
    """Else sync would wait forever for an event that was never sent."""
    before = Store.runtime().last_seq("workflows/wf-seq")
    with pytest.raises(InvalidValueError, match="limit is 1048576"):
        await StateStore.save_state("big", "x" * (2 << 20), "wf-seq", StateType.WORKFLOWS)
    with pytest.raises(InvalidValueError, match="limit is 1048576"):
        await StateStore.save_state_object("wf-seq", {"big": "x" * (2 << 20)}, StateType.WORKFLOWS)
    assert Store.runtime().last_seq("workflows/wf-seq") == before


def test_sync_many_cuts_its_bulk_reads_by_count_and_bytes():
    from statestore.publisher.store import SYNC_READ_MAX_KEY_BYTES, SYNC_READ_MAX_KEYS, _chunks

    ids = [f"id-{n}" for n in range(40_000)]  # more than sqlite's 32,766 keys at once
    chunks = _chunks(ids, {i: f"workflows/{i}" for i in ids})
    assert [i for c in chunks for i in c] == ids
    assert max(len(c) for c in chunks) == SYNC_READ_MAX_KEYS
    long_ids = [f"{n:04d}" + "x" * 120 for n in range(2000)]
    chunks = _chunks(long_ids, {i: f"workflows/{i}" for i in long_ids})
    assert all(sum(len(f"workflows/{i}") + 16 for i in c) <= SYNC_READ_MAX_KEY_BYTES for c in chunks)
    assert [i for c in chunks for i in c] == long_ids


@pytest.mark.parametrize("bad_id", ["", "../etc", None])
async def test_deletes_check_ids_like_writes(bad_id):
    with pytest.raises(InvalidStateIdError):
        await StateStore.delete_state(bad_id, StateType.WORKFLOWS)
    with pytest.raises(InvalidStateIdError):
        await StateStore.delete_field("k", bad_id, StateType.WORKFLOWS)
    with pytest.raises(InvalidValueError, match="field name"):
        await StateStore.delete_field("", "wf", StateType.WORKFLOWS)


@pytest.mark.parametrize("ttl", [0, -5, 1.5, "60", True])
async def test_bad_ttl_is_refused_before_queuing(ttl):
    with pytest.raises(InvalidValueError, match="ttl_seconds must be a whole number"):
        await StateStore.save_state("k", 1, "wf", StateType.WORKFLOWS, ttl_seconds=ttl)
    with pytest.raises(InvalidValueError, match="ttl_seconds must be a whole number"):
        await StateStore.save_state_object("wf", {}, StateType.WORKFLOWS, ttl_seconds=ttl)


@pytest.mark.parametrize("value", ["x" * 1100, 10**1100], ids=["str", "int"])
async def test_a_plain_value_over_the_size_limit_is_refused_like_any_other(monkeypatch, value):
    # Strings and integers skip the JSON round trip (they read back as they are): not the size check.
    from statestore.core import settings

    monkeypatch.setenv("STATESTORE_MAX_VALUE_BYTES", "1024")
    settings.get_settings.cache_clear()
    try:
        with pytest.raises(InvalidValueError, match="the limit is 1024"):
            await StateStore.save_state("k", value, "wf", StateType.WORKFLOWS)
    finally:
        settings.get_settings.cache_clear()


@pytest.mark.parametrize("value", ["text", 7, True, None, 1.5, -0.0, [1, (2, 3)], {"a": (1,)}])
def test_a_value_is_kept_as_json_reads_it_back(value):
    import json

    from statestore.publisher.values import json_roundtrip

    normalised = json_roundtrip(value, "value", "wf")
    assert normalised == json.loads(json.dumps(value)) and type(normalised) is type(json.loads(json.dumps(value)))


def test_a_long_wait_for_applied_events_polls_less_often_but_returns_at_most_5_percent_later():
    from statestore.publisher.store import _next_poll_delay

    delay, waited, polls = 0.002, 0.0, 0
    while waited < 10.0:
        waited += delay
        delay = _next_poll_delay(delay, waited)
        polls += 1
        assert delay <= max(0.02, waited / 20) and delay <= 0.1
    assert polls < 150  # at a steady 20 ms it was 500 polls for 10 s
    assert _next_poll_delay(0.002, 0.01) == 0.004 and _next_poll_delay(0.016, 0.1) == 0.02  # short waits as before
