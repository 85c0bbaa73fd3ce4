"""Every request the subscriber sends is cut by count and by bytes (issue 9.3)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestore.core.cutting import cut
from statestore.core.sidecar import Upsert
from statestore.subscriber.applier import EventApplier
from statestore.subscriber.outbox import OUTBOX, OutboxEntry
from statestore.subscriber.ports import InMemoryStateRepository
from tests.strategies import field_updated


@given(sizes=st.lists(st.integers(0, 5000), max_size=200), max_bytes=st.integers(1, 20_000), max_count=st.integers(1, 50))
def test_pieces_keep_order_and_stay_within_both_bounds(sizes, max_bytes, max_count):
    pieces = list(cut(list(enumerate(sizes)), lambda item: item[1], max_bytes, max_count))
    assert [item for piece in pieces for item in piece] == list(enumerate(sizes))
    for piece in pieces:
        assert 1 <= len(piece) <= max_count
        assert sum(size for _, size in piece) <= max_bytes or len(piece) == 1  # only an item too big alone


def test_bounds_must_be_positive():
    with pytest.raises(ValueError, match="must be positive"):
        list(cut([1], len, 0, 1))


class RecordingRepository(InMemoryStateRepository):
    def __init__(self):
        super().__init__()
        self.transactions: list[int] = []
        self.reads: list[int] = []

    async def load(self, keys):
        keys = list(keys)
        self.reads.append(len(keys))
        return await super().load(keys)

    async def commit(self, upserts):
        self.transactions.append(sum(len(u.key) + len(getattr(u, "value", b"")) for u in upserts))
        await super().commit(upserts)


async def test_no_transaction_or_outbox_entry_exceeds_its_bound():
    repo = RecordingRepository()
    bound = 200_000
    applier = EventApplier(repo, request_max_bytes=bound)
    big = "x" * 20_000  # 1,000 states of ~20 kB: 20 MB in one delivery
    result = await applier.apply([field_updated("f", big, state_id=f"s{i}", hlc=(i, 0)) for i in range(1000)])
    assert (result.written, result.failed, result.refused) == (1000, {}, {})
    entry_overhead = 250 * 40 + 1000  # an entry names at most 250 keys
    assert max(repo.transactions) <= bound + entry_overhead
    assert max(repo.reads) <= 250
    entries = [OutboxEntry.model_validate_json(item.value) for key, item in repo.items.items()
               if key.startswith(OUTBOX) and key.split("/")[-1].isdigit()]  # fmt: skip
    assert sum(len(entry.keys) for entry in entries) == 1000
    assert max(len(item.value) for key, item in repo.items.items() if key.startswith(OUTBOX)) <= entry_overhead


async def test_a_document_over_the_limit_is_refused_and_the_others_apply():
    repo = InMemoryStateRepository()
    applier = EventApplier(repo, max_document_bytes=50_000)
    events = [field_updated(f"f{i}", "x" * 20_000, seq=i + 1, hlc=(i + 1, 0), state_id="big") for i in range(3)]
    events.append(field_updated("f", "small", state_id="small"))
    result = await applier.apply(events)
    assert set(result.refused) == {"workflows/big"} and "over the limit" in result.refused["workflows/big"]
    assert "workflows/small" in repo.items and "workflows/big" not in repo.items


def test_upserts_are_sized_by_key_and_value():
    assert sum(1 for _ in cut([Upsert("k", b"v" * 10, None)] * 10, lambda u: len(u.value), 25, 100)) == 5


async def test_a_bulk_read_whose_answer_is_too_large_is_read_again_in_halves():
    from statestore.core.settings import SidecarSettings
    from statestore.core.sidecar import MessageTooLargeError, SidecarClient, StoredItem

    client = SidecarClient(SidecarSettings())
    calls, answered = [], []

    async def read(store, keys):
        calls.append(len(keys))
        if len(keys) > 3:  # the answer would exceed the sidecar's limit
            raise MessageTooLargeError("grpc: trying to send message larger than max")
        answered.append(len(keys))
        return {key: StoredItem(b"{}", "1") for key in keys}

    client._read = read
    keys = [f"k{n}" for n in range(2500)]
    found = await client.get_bulk_state("statestore", keys)
    await client.close()
    assert set(found) == set(keys)
    assert max(calls) <= 1000 and sum(answered) == 2500  # each key read once, none lost
