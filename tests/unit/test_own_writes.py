"""Read-your-writes: what a process keeps of its own writes until a read shows them applied."""

import time

from statestore.core.document import apply_events
from statestore.publisher.own_writes import OwnWrites
from tests.strategies import field_deleted, field_updated, object_replaced, state_deleted

NOW = int(time.time() * 1000)


def stamp(n, producer="me"):
    return dict(producer=producer, seq=n, hlc=(NOW + n, 0))


def test_a_read_merges_what_the_store_does_not_show_yet():
    own = OwnWrites()
    stored = apply_events(None, [field_updated("a", 1, **stamp(1))])
    own.add(field_updated("a", 1, **stamp(1)))
    own.add(field_updated("b", 2, **stamp(2)))
    pending = own.settle("workflows/s1", stored)
    assert [e.seq for e in pending] == [2]  # seq 1 is applied: forgotten
    assert apply_events(stored, pending).to_state() == {"a": 1, "b": 2}


def test_only_what_can_change_a_read_is_kept():
    own = OwnWrites()
    own.add(field_updated("a", 1, **stamp(1)))
    own.add(field_updated("a", 2, **stamp(2)))  # supersedes the first
    own.add(field_updated("b", 3, **stamp(3)))
    assert len(own) == 2
    own.add(object_replaced({"c": 4}, **stamp(4)))  # supersedes both fields
    own.add(field_updated("d", 5, **stamp(5)))
    events, _ = own.pending("workflows/s1")
    assert sorted(e.seq for e in events) == [4, 5] and len(own) == 2
    assert apply_events(None, events).to_state() == {"c": 4, "d": 5}


def test_a_replace_keeps_a_later_field_that_arrived_first():
    own = OwnWrites()  # two threads: the later stamp queued first
    own.add(field_updated("late", 1, **stamp(5)))
    own.add(object_replaced({"x": 1}, **stamp(4)))
    events, _ = own.pending("workflows/s1")
    assert apply_events(None, events).to_state() == {"x": 1, "late": 1}


def test_deletes_are_own_writes_too():
    own = OwnWrites()
    stored = apply_events(None, [field_updated("a", 1, producer="other", seq=1, hlc=(NOW, 0))])
    own.add(field_deleted("a", **stamp(1)))
    assert apply_events(stored, own.settle("workflows/s1", stored)).to_state() == {}
    own.add(state_deleted(**stamp(2)))
    assert not apply_events(stored, own.settle("workflows/s1", stored)).exists()


def test_past_the_bound_the_oldest_go_and_their_state_is_marked():
    own = OwnWrites(max_events=2)
    own.add(field_updated("a", 1, **stamp(1), state_id="s1"))
    own.add(field_updated("a", 1, **stamp(2), state_id="s2"))
    own.add(field_updated("a", 1, **stamp(3), state_id="s3"))
    assert own.pending("workflows/s1") == ([], True)
    assert own.pending("workflows/s2")[1] is False and len(own) == 2
    own.settle("workflows/s1", None, all_applied=True)  # a sync saw them applied
    assert own.pending("workflows/s1") == ([], False)


def test_events_handed_back_by_a_publish_error_are_forgotten():
    own = OwnWrites()
    event = field_updated("a", 1, **stamp(1))
    own.add(event)
    own.discard([event])
    assert own.pending("workflows/s1") == ([], False) and len(own) == 0


def test_an_expired_write_is_not_brought_back():
    own = OwnWrites()
    old = NOW - 10_000
    own.add(field_updated("a", 1, producer="me", seq=1, hlc=(old, 0)).model_copy(update={"ttl_seconds": 5}))
    assert own.settle("workflows/s1", None) == []
