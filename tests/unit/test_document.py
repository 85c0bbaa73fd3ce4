"""The merge equals the sequential oracle whatever the delivery order, duplicates or batching."""

from hypothesis import given, settings
from hypothesis import strategies as st

from statestore.core.document import (
    apply_events,
    decode_document,
    encode_document,
    provisional_document,
    replay_in_order,
)
from tests.strategies import event_histories, field_deleted, field_updated, object_replaced, state_deleted


def state_of(document):
    return None if document is None or not document.exists() else document.to_state()


def apply_in_batches(events, cuts):
    document = None
    start = 0
    for cut in sorted(cuts) + [len(events)]:
        document = apply_events(document, events[start:cut])
        start = cut
    return document


@settings(max_examples=400, deadline=None)
@given(history=event_histories(), data=st.data())
def test_any_delivery_order_with_duplicates_converges_to_the_oracle(history, data):
    duplicated = history + data.draw(st.lists(st.sampled_from(history), max_size=10) if history else st.just([]))
    delivered = data.draw(st.permutations(duplicated))
    cuts = data.draw(st.lists(st.integers(0, len(delivered)), max_size=4))
    document = apply_in_batches(delivered, cuts)
    expected = replay_in_order(history)
    assert (state_of(document) if history else None) == expected


@settings(max_examples=200, deadline=None)
@given(history=event_histories(), data=st.data())
def test_merge_is_idempotent_and_order_free_at_the_document_level(history, data):
    once = apply_events(None, history)
    again = apply_events(once, data.draw(st.permutations(history)))
    assert again == once


@settings(max_examples=200, deadline=None)
@given(history=event_histories())
def test_every_processed_sequence_number_is_recorded(history):
    document = apply_events(None, list(reversed(history)))
    for producer in {e.producer for e in history}:
        last = max(e.seq for e in history if e.producer == producer)
        assert document.processed_upto(producer) == last
        assert document.producers[producer].ahead == ()


def test_replace_removes_fields_written_before_it_but_keeps_later_ones():
    events = [
        field_updated("old", 1, seq=1, hlc=(1, 0)),
        object_replaced({"a": 1, "b": 2}, seq=2, hlc=(2, 0)),
        field_updated("b", 3, producer="p2", seq=1, hlc=(3, 0)),
    ]
    for order in (events, events[::-1], [events[2], events[0], events[1]]):
        assert apply_events(None, order).to_state() == {"a": 1, "b": 3}


def test_later_timestamp_wins_across_producers():
    late = field_updated("status", "done", producer="a", hlc=(10, 0))
    early = field_updated("status", "running", producer="b", hlc=(9, 5))
    assert apply_events(None, [late, early]).to_state() == {"status": "done"}


def test_out_of_order_sequence_numbers_are_tracked_until_contiguous():
    doc = apply_events(None, [field_updated("a", 1, seq=3, hlc=(3, 0)), field_updated("a", 1, seq=1, hlc=(1, 0))])
    assert doc.processed_upto("p1") == 1 and doc.producers["p1"].ahead == (3,)
    doc = apply_events(doc, [field_updated("a", 1, seq=2, hlc=(2, 0))])
    assert doc.processed_upto("p1") == 3 and doc.producers["p1"].ahead == ()


def test_any_number_of_producers_may_write_one_state_and_the_records_stay_bounded():
    """No cap by count (a 257th producer is tracked like the first); records age out by
    the document's own clock, so their number is bounded by who wrote within the retention."""
    retention = 1000
    doc = None
    for i in range(3000):  # 3,000 producers, one every 10 ms of document time
        doc = apply_events(doc, [field_updated(f"f{i % 7}", i, producer=f"p{i}", hlc=(10 * i, 0))], retention_ms=retention)
        assert doc.processed_upto(f"p{i}") == 1  # the newest writer is always tracked
        assert len(doc.producers) <= retention // 10 + 1
    newest = 10 * 2999
    assert all(p.last_wall_ms >= newest - retention for p in doc.producers.values())
    assert "p2999" in doc.producers and "p2899" in doc.producers and "p2898" not in doc.producers


def test_a_producer_whose_clock_is_behind_is_dated_by_the_document_not_evicted_at_once():
    doc = apply_events(None, [field_updated("a", 1, producer="fast", hlc=(10_000_000, 0))], retention_ms=1000)
    doc = apply_events(doc, [field_updated("b", 2, producer="slow", hlc=(5, 0))], retention_ms=1000)
    assert doc.processed_upto("slow") == 1 and doc.to_state() == {"a": 1, "b": 2}


def test_a_redelivered_event_of_an_evicted_producer_changes_nothing_it_need_not():
    old = field_updated("a", 1, producer="old", hlc=(0, 0))
    doc = apply_events(None, [old], retention_ms=1000)
    doc = apply_events(doc, [field_updated("b", 2, producer="new", hlc=(5000, 0))], retention_ms=1000)
    assert "old" not in doc.producers
    again = apply_events(doc, [old], retention_ms=1000)
    assert again.to_state() == {"a": 1, "b": 2}  # the merge stays idempotent without the record


@settings(max_examples=300, deadline=None)
@given(history=event_histories(max_producers=6, max_events=40), data=st.data())
def test_eviction_never_changes_the_state_and_keeps_every_recent_producer(history, data):
    """With a retention short enough to evict, fields still equal the oracle in any
    order, and every producer that wrote within the retention of the newest stamp keeps
    an exact record (what sync waits on)."""
    retention = data.draw(st.integers(0, 10))
    delivered = data.draw(st.permutations(history))
    cuts = data.draw(st.lists(st.integers(0, len(delivered)), max_size=4))
    document, start = None, 0
    for cut in sorted(cuts) + [len(delivered)]:
        document = apply_events(document, delivered[start:cut], retention_ms=retention)
        start = cut
    assert (state_of(document) if history else None) == replay_in_order(history)
    if not history:
        return
    newest = max(e.hlc[0] for e in history)
    for producer in {e.producer for e in history}:
        mine = [e for e in history if e.producer == producer]
        if min(e.hlc[0] for e in mine) >= newest - retention:
            assert document.processed_upto(producer) == max(e.seq for e in mine)
    assert all(p.last_wall_ms >= newest - retention for p in document.producers.values())


def test_documents_round_trip_through_json():
    doc = apply_events(None, [object_replaced({"a": [1, {"b": None}]}), field_updated("c", "x", seq=2, hlc=(2, 0))])
    assert decode_document("k", encode_document(doc)) == doc


def test_an_undecodable_document_is_an_error_not_empty_state():
    import pytest

    from statestore.core.errors import StateDecodeError

    with pytest.raises(StateDecodeError, match="workflows/x"):
        decode_document("workflows/x", b'{"fields": 3}')


def test_same_producer_and_sequence_with_different_content_has_one_winner_in_every_order():
    a = field_updated("status", "a", seq=5, hlc=(9, 0))
    b = field_updated("status", "b", seq=5, hlc=(9, 0))
    winner = max((a, b), key=lambda e: e.stamp).value
    assert apply_events(None, [a, b]).to_state() == apply_events(None, [b, a]).to_state() == {"status": winner}
    assert replay_in_order([b, a]) == {"status": winner}
    assert apply_events(None, [a, b]).processed_upto("p1") == 0  # seq 5 counted once, ahead
    assert apply_events(None, [a, b]).producers["p1"].ahead == (5,)


# -- deletes ---------------------------------------------------------------------------

def test_a_state_delete_removes_every_field_written_before_it_and_a_later_write_recreates():
    events = [
        object_replaced({"a": 1, "b": 2}, seq=1, hlc=(1, 0)),
        state_deleted(producer="p2", seq=1, hlc=(2, 0)),
        field_updated("c", 3, producer="p3", seq=1, hlc=(3, 0)),
    ]
    for order in (events, events[::-1], [events[1], events[0]]):
        doc = apply_events(None, order)
        assert state_of(doc) == replay_in_order(order)
    deleted = apply_events(None, events[:2])
    assert not deleted.exists() and deleted.to_state() == {}
    assert deleted.processed_upto("p1") == 1 and deleted.processed_upto("p2") == 1  # sync still works
    assert state_of(apply_events(deleted, [events[2]])) == {"c": 3}


def test_a_field_delete_is_a_tombstone_that_a_late_earlier_write_cannot_undo():
    write = field_updated("a", 1, seq=1, hlc=(1, 0))
    delete = field_deleted("a", producer="p2", seq=1, hlc=(2, 0))
    rewrite = field_updated("a", 9, producer="p3", seq=1, hlc=(3, 0))
    doc = apply_events(None, [delete, write])
    assert doc.exists() and doc.to_state() == {} and "a" in doc.deleted
    assert apply_events(doc, [rewrite]).to_state() == {"a": 9}
    assert "a" not in apply_events(doc, [rewrite]).deleted


def test_a_field_delete_alone_does_not_create_a_state():
    doc = apply_events(None, [field_deleted("a")])
    assert not doc.exists() and replay_in_order([field_deleted("a")]) is None


def test_field_tombstones_age_out_on_the_documents_clock():
    doc = apply_events(None, [field_updated("a", 1), field_deleted("a", seq=2, hlc=(2, 0))], tombstone_retention_ms=100)
    assert "a" in doc.deleted
    doc = apply_events(doc, [field_updated("b", 1, seq=3, hlc=(500, 0))], tombstone_retention_ms=100)
    assert doc.deleted == {} and doc.to_state() == {"b": 1}


def test_documents_from_before_deletes_still_read_as_existing():
    old = b'{"version":1,"replaced":[1,0,"p1",1,"x"],"fields":{},"producers":{}}'
    doc = decode_document("k", old)
    assert doc.exists() and doc.to_state() == {}


@settings(max_examples=300, deadline=None)
@given(history=event_histories(max_events=30), data=st.data())
def test_deletes_in_any_delivery_order_give_the_oracles_answer_and_existence(history, data):
    delivered = data.draw(st.permutations(history + history[: data.draw(st.integers(0, 5))]))
    document = apply_in_batches(delivered, data.draw(st.lists(st.integers(0, len(delivered)), max_size=4)))
    assert (state_of(document) if history else None) == replay_in_order(history)
    if history:
        assert decode_document("k", encode_document(document)) == document


# -- expiry ------------------------------------------------------------------------------

def test_the_newest_write_decides_the_ttl_in_any_order():
    from statestore.core.events import encode_event

    short = field_updated("a", 1, seq=1, hlc=(1, 0)).model_copy(update={"ttl_seconds": 60})
    permanent = field_updated("b", 2, producer="p2", seq=1, hlc=(2, 0))
    assert apply_events(None, [short, permanent]).ttl_s is None
    assert apply_events(None, [permanent, short]).ttl_s is None
    assert apply_events(None, [short]).ttl_s == 60
    assert b"ttl_seconds" not in encode_event(permanent) and b'"ttl_seconds":60' in encode_event(short)


def test_a_provisional_document_reads_as_its_event_and_any_apply_makes_it_final():
    """A caller writes a new credential ahead of its event (statestore.core.document): the
    document holds that event, and applying the event again still yields a new, final
    document, so the subscriber writes, snapshots and indexes it."""
    event = object_replaced({"password": "x"}, seq=1, hlc=(7, 0))
    ahead = provisional_document(event)
    assert ahead.provisional and ahead.to_state() == {"password": "x"} and ahead.processed_upto("p1") == 1
    assert decode_document("k", encode_document(ahead)) == ahead
    applied = apply_events(ahead, [event])
    assert applied is not ahead and not applied.provisional
    assert applied == apply_events(None, [event])
    assert apply_events(applied, [event]) is applied  # from then on a duplicate changes nothing
    later = apply_events(ahead, [field_updated("port", 5432, seq=2, hlc=(8, 0))])
    assert not later.provisional and later.to_state() == {"password": "x", "port": 5432}


def test_final_documents_are_stored_without_the_provisional_flag():
    document = apply_events(None, [field_updated("a", 1)])
    assert b"provisional" not in encode_document(document)
    assert b'"provisional":true' in encode_document(provisional_document(object_replaced({"a": 1})))


def test_a_caller_writes_its_event_ahead_over_the_stored_document():
    """A confirmed replace (statestore.publisher.confirmed): merged like the subscriber
    merges it, marked provisional; nothing to write once the subscriber applied it."""
    from statestore.core.document import is_applied, written_ahead

    later = field_updated("late", 1, producer="other", seq=1, hlc=(9, 0))
    stored = apply_events(None, [field_updated("old", 1, producer="other", seq=2, hlc=(1, 0)), later])
    replace = object_replaced({"new": 2}, producer="me", seq=1, hlc=(5, 0))
    ahead = written_ahead(stored, replace)
    assert ahead.provisional and ahead.to_state() == {"new": 2, "late": 1} and is_applied(ahead, replace)
    final = apply_events(ahead, [replace])  # the subscriber applies the event: content unchanged
    assert not final.provisional and final.to_state() == ahead.to_state()
    assert written_ahead(final, replace) is final
