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


def test_queued_writes_are_never_dropped_by_the_bound():
    own = OwnWrites(max_events=2)
    events = [field_updated("a", n, **stamp(n), state_id=f"s{n}") for n in range(1, 6)]
    for event in events:
        own.add(event)
    assert len(own) == 5  # none published yet: the publish queue bounds them
    assert own.pending("workflows/s1") == ([events[0]], {})


def test_past_the_bound_the_oldest_published_go_and_their_state_waits_for_their_seqs():
    own = OwnWrites(max_events=2)
    events = [field_updated("a", n, **stamp(n), state_id=f"s{n}") for n in range(1, 5)]
    for event in events:
        own.add(event)
    own.published(events[:3])
    assert own.pending("workflows/s1") == ([], {"me": 1})  # dropped: a read waits for seq 1
    assert own.pending("workflows/s2")[1] == {} and len(own) == 3  # s4 is queued: kept
    behind = apply_events(None, [field_updated("a", 0, producer="me", seq=1, hlc=(NOW, 0), state_id="s9")])
    own.settle("workflows/s1", None)
    assert own.pending("workflows/s1")[1] == {"me": 1}  # not applied yet: still waits
    own.settle("workflows/s1", behind)  # the document shows seq 1 of "me" processed
    assert own.pending("workflows/s1") == ([], {})


def test_a_sync_that_saw_every_write_applied_ends_the_wait():
    own = OwnWrites(max_events=0)
    event = field_updated("a", 1, **stamp(1))
    own.add(event)
    own.published([event])
    assert own.pending("workflows/s1") == ([], {"me": 1})
    own.settle("workflows/s1", None, all_applied=True)
    assert own.pending("workflows/s1") == ([], {})


def test_a_superseded_write_is_not_counted_as_published():
    own = OwnWrites(max_events=1)
    first, second = field_updated("a", 1, **stamp(1)), field_updated("a", 2, **stamp(2))
    own.add(first)
    own.add(second)  # supersedes first before it was published
    own.published([first])
    assert own.pending("workflows/s1") == ([second], {}) and len(own) == 1


def test_events_handed_back_by_a_publish_error_are_forgotten():
    own = OwnWrites()
    event = field_updated("a", 1, **stamp(1))
    own.add(event)
    own.discard([event])
    assert own.pending("workflows/s1") == ([], {}) and len(own) == 0


def test_an_expired_write_is_not_brought_back():
    own = OwnWrites()
    old = NOW - 10_000
    own.add(field_updated("a", 1, producer="me", seq=1, hlc=(old, 0)).model_copy(update={"ttl_seconds": 5}))
    assert own.settle("workflows/s1", None) == []
