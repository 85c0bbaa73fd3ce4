"""Hypothesis strategies and builders for events (shared by unit and fuzz tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from statestore.core.events import FieldDeleted, FieldUpdated, ObjectReplaced, StateDeleted
from statestore.core.paths import StateType

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)
field_names = st.sampled_from(["a", "b", "c", "d", "status", "progress"])


def field_updated(field, value, producer="p1", seq=1, hlc=(1, 0), state_id="s1", app="default"):
    return FieldUpdated(app=app, state_id=state_id, state_type=StateType.WORKFLOWS, producer=producer, seq=seq,
                        hlc=hlc, field=field, value=value)  # fmt: skip


def object_replaced(value, producer="p1", seq=1, hlc=(1, 0), state_id="s1", app="default"):
    return ObjectReplaced(app=app, state_id=state_id, state_type=StateType.WORKFLOWS, producer=producer, seq=seq,
                          hlc=hlc, value=value)  # fmt: skip


def state_deleted(producer="p1", seq=1, hlc=(1, 0), state_id="s1", app="default"):
    return StateDeleted(app=app, state_id=state_id, state_type=StateType.WORKFLOWS, producer=producer, seq=seq, hlc=hlc)


def field_deleted(field, producer="p1", seq=1, hlc=(1, 0), state_id="s1", app="default"):
    return FieldDeleted(app=app, state_id=state_id, state_type=StateType.WORKFLOWS, producer=producer, seq=seq,
                        hlc=hlc, field=field)  # fmt: skip


@st.composite
def event_histories(draw, max_producers=4, max_events=25, deletes=True):
    """Events from several producers, each stamping its events with a rising clock.

    Wall clocks of different producers overlap and tie, as on real hosts.
    """
    producers = [f"p{i}" for i in range(draw(st.integers(1, max_producers)))]
    events = []
    clocks = {p: draw(st.integers(0, 5)) for p in producers}
    seqs = {p: 0 for p in producers}
    for _ in range(draw(st.integers(0, max_events))):
        producer = draw(st.sampled_from(producers))
        clocks[producer] += draw(st.integers(0, 3))
        seqs[producer] += 1
        stamp = dict(producer=producer, seq=seqs[producer], hlc=(clocks[producer], seqs[producer]))
        choice = draw(st.integers(0, 9))
        if choice < 2:
            value = draw(st.dictionaries(field_names, json_values, max_size=4))
            events.append(object_replaced(value, **stamp))
        elif deletes and choice == 2:
            events.append(state_deleted(**stamp))
        elif deletes and choice == 3:
            events.append(field_deleted(draw(field_names), **stamp))
        else:
            events.append(field_updated(draw(field_names), draw(json_values), **stamp))
    return events


# Credential configurations: any text but surrogates and NUL, integers, booleans, None,
# nested dicts.
credential_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
credential_configs = st.dictionaries(
    credential_text,
    st.recursive(
        st.none() | st.booleans() | st.integers() | credential_text,
        lambda children: st.dictionaries(credential_text, children, max_size=4),
        max_leaves=10,
    ),
    max_size=6,
)
