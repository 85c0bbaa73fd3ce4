"""The merge equals the sequential oracle whatever the delivery order, duplicates or batching."""

from hypothesis import given, settings
from hypothesis import strategies as st

from statestore.document import (
    MAX_TRACKED_PRODUCERS,
    apply_events,
    decode_document,
    encode_document,
    replay_in_order,
)
from tests.strategies import event_histories, field_updated, object_replaced


def state_of(document):
    return None if document is None else document.to_state()


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


def test_producer_tracking_is_bounded():
    events = [field_updated("a", i, producer=f"p{i}", hlc=(i, 0)) for i in range(MAX_TRACKED_PRODUCERS + 10)]
    doc = apply_events(None, events)
    assert len(doc.producers) == MAX_TRACKED_PRODUCERS
    assert f"p{MAX_TRACKED_PRODUCERS + 9}" in doc.producers and "p0" not in doc.producers


def test_documents_round_trip_through_json():
    doc = apply_events(None, [object_replaced({"a": [1, {"b": None}]}), field_updated("c", "x", seq=2, hlc=(2, 0))])
    assert decode_document("k", encode_document(doc)) == doc


def test_an_undecodable_document_is_an_error_not_empty_state():
    import pytest

    from statestore.errors import StateDecodeError

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
