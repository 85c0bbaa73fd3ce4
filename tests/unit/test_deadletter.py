"""Dead letters kept in the state store (issue 12): the box, the servicer's dead-letter
subscription, and redrive, over in-memory ports (the real stack: tests/integration/test_deadletters.py)."""

import json

import pytest
from dapr.proto.runtime.v1 import appcallback_pb2 as pb
from google.protobuf import struct_pb2

from statestore.core.events import encode_cloudevent
from statestore.core.settings import Settings
from statestore.subscriber.deadletter import SHARDS, DeadLetterBox, dead_letter, letter_id, origin, redrive
from statestore.subscriber.ports import EtagMismatchError, InMemoryStateRepository
from statestore.subscriber.servicer import REFUSED_STATE, RETRY, SUCCESS, SubscriberServicer
from tests.strategies import field_updated

S = Settings()


def good_body(topic=None, state_id="s1"):
    body = json.loads(encode_cloudevent(field_updated("f", 1, state_id=state_id)))
    if topic:
        body["topic"] = topic
    return json.dumps(body).encode()


def raw(entry_id, body):
    return pb.TopicEventBulkRequestEntry(entry_id=entry_id, bytes=body, content_type="application/cloudevents+json")


async def test_kept_dead_letters_are_listed_oldest_first_and_a_redelivery_is_one_record():
    box = DeadLetterBox(InMemoryStateRepository())
    later = dead_letter(b"garbage", S, "invalid event: x", now_ms=2000)
    first = dead_letter(good_body(), S, "refused", now_ms=1000)
    assert await box.keep([later, first]) == 2
    assert await box.keep([dead_letter(b"garbage", S, "invalid event: x", now_ms=3000)]) == 0  # redelivered
    assert [letter.id for letter in await box.stored()] == [first.id, later.id]
    assert (await box.stored())[1].body == b"garbage"


async def test_ids_spread_over_the_index_shards_and_removal_leaves_the_others():
    repo = InMemoryStateRepository()
    box = DeadLetterBox(repo)
    letters = [dead_letter(f"poison {n}".encode(), S, "r", now_ms=n) for n in range(200)]
    assert await box.keep(letters) == 200
    shards = [key for key in repo.items if key.startswith("statestore-deadletter/index/")]
    assert len(shards) == SHARDS  # no one shared document: every shard holds some
    await box.remove([letters[0].id, letters[5].id, "0" * 32])  # an unknown id is ignored
    left = await box.stored()
    assert len(left) == 198 and letters[0].id not in {letter.id for letter in left}
    assert f"statestore-deadletter/{letters[0].id}" not in repo.items


async def test_a_lost_race_on_a_shard_is_read_and_merged_again():
    repo = InMemoryStateRepository()
    box, rival = DeadLetterBox(repo), DeadLetterBox(repo)
    ours, theirs = dead_letter(b"a", S, "r"), dead_letter(b"b", S, "r")
    commit = repo.commit
    raced = []

    async def commit_after_a_rival(ops):
        if not raced:  # the rival writes between our read and our commit
            raced.append(True)
            await rival.keep([theirs])
        await commit(ops)

    repo.commit = commit_after_a_rival
    assert await box.keep([ours]) == 1
    assert {letter.id for letter in await box.stored()} == {ours.id, theirs.id}


def test_a_dead_letter_goes_back_to_the_topic_and_component_it_came_from():
    assert origin(good_body(S.credentials_topic), S) == (S.credentials_pubsub_name, S.credentials_topic)
    assert origin(good_body(S.parked_topic), S) == (S.pubsub_name, S.parked_topic)
    assert origin(good_body(S.topic), S) == (S.pubsub_name, S.topic)
    # Written to the broker by hand, or naming a topic we do not read: the event topic.
    assert origin(b'{"specversion": "1.0", "type": ', S) == (S.pubsub_name, S.topic)
    assert origin(good_body("elsewhere"), S) == (S.pubsub_name, S.topic)
    assert origin(b"[1, 2]", S) == (S.pubsub_name, S.topic)
    assert origin(b'{"topic": ["not", "a", "name"]}', S) == (S.pubsub_name, S.topic)
    assert origin(b"[" * 100_000 + b"]" * 100_000, S) == (S.pubsub_name, S.topic)
    assert origin(b"\xff\xfe", S) == (S.pubsub_name, S.topic)


async def test_the_subscriber_keeps_what_the_dead_letter_topic_delivers_with_a_reason():
    servicer = SubscriberServicer(applier=None, settings=S)
    bad = json.loads(good_body(S.topic))
    bad["data"]["seq"] = "seven"
    bad_body, good = json.dumps(bad).encode(), good_body(S.credentials_topic)
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000  # past Python's recursion limit
    statuses = await servicer.handle(S.deadletter_topic, [raw("1", b"{not json"), raw("2", bad_body), raw("3", good),
                                                          raw("4", deep)])  # fmt: skip
    assert statuses == {"1": SUCCESS, "2": SUCCESS, "3": SUCCESS, "4": SUCCESS}
    kept = {letter.body: letter for letter in await servicer.dead_letters.stored()}
    assert kept[deep].reason == "invalid event: not a structured CloudEvent: the JSON is nested too deeply"
    assert "not a CloudEvent" in kept[deep].describe()
    assert kept[b"{not json"].reason.startswith("invalid event: not a structured CloudEvent")
    assert kept[bad_body].reason.startswith("invalid event:") and "seq" in kept[bad_body].reason
    assert kept[good].reason == REFUSED_STATE and kept[good].topic == S.credentials_topic
    assert kept[good].id == letter_id(good)


async def test_a_dead_letter_the_decoder_chokes_on_is_kept_all_the_same(monkeypatch):
    import statestore.subscriber.servicer

    def choke(entry):
        raise RuntimeError("a decoder bug")

    monkeypatch.setattr(statestore.subscriber.servicer, "decode_entry", choke)
    servicer = SubscriberServicer(applier=None, settings=S)
    assert await servicer.handle(S.deadletter_topic, [raw("1", b"x")]) == {"1": SUCCESS}
    assert [letter.reason for letter in await servicer.dead_letters.stored()] == ["unreadable: RuntimeError"]


async def test_a_dead_letter_the_store_does_not_take_is_redelivered():
    class Down(InMemoryStateRepository):
        async def load(self, keys):
            raise OSError("sidecar down")

    servicer = SubscriberServicer(applier=None, settings=S, dead_letters=DeadLetterBox(Down()))
    assert await servicer.handle(S.deadletter_topic, [raw("1", b"x")]) == {"1": RETRY}


async def test_a_parsed_cloud_event_is_kept_as_structured_json():
    """Should a sidecar deliver a dead letter parsed (it was asked for raw payloads), the
    CloudEvent is written back as JSON with its extensions, and still re-drives."""
    servicer = SubscriberServicer(applier=None, settings=S)
    body = json.loads(good_body(S.topic))
    extensions = struct_pb2.Struct()
    extensions.update({"topic": S.credentials_topic, "pubsubname": S.credentials_pubsub_name})
    entry = pb.TopicEventBulkRequestEntry(entry_id="1", cloud_event=pb.TopicEventCERequest(
        id=body["id"], source=body["source"], type=body["type"], spec_version="1.0",
        data_content_type="application/json", data=json.dumps(body["data"]).encode(), extensions=extensions))  # fmt: skip
    assert await servicer.handle(S.deadletter_topic, [entry]) == {"1": SUCCESS}
    (letter,) = await servicer.dead_letters.stored()
    assert json.loads(letter.body)["data"] == body["data"] and letter.topic == S.credentials_topic
    assert letter.reason == REFUSED_STATE


async def test_the_subscriber_reads_each_components_dead_letter_topic_raw():
    answer = await SubscriberServicer(applier=None, settings=S).ListTopicSubscriptions(None, None)
    dead = [sub for sub in answer.subscriptions if sub.topic == S.deadletter_topic]
    assert {sub.pubsub_name for sub in dead} == {S.pubsub_name, S.credentials_pubsub_name}
    for sub in dead:
        assert sub.metadata["rawPayload"] == "true" and not sub.dead_letter_topic and sub.bulk_subscribe.enabled


class Publisher:
    def __init__(self, fail_on=None):
        self.sent, self.fail_on = [], fail_on

    async def publish(self, pubsub, topic, data, content_type):
        if data == self.fail_on:
            raise OSError("sidecar down")
        self.sent.append((pubsub, topic, data, content_type))


async def test_redrive_publishes_to_the_origin_and_removes_only_what_was_published():
    box = DeadLetterBox(InMemoryStateRepository())
    credential = dead_letter(good_body(S.credentials_topic, "c1"), S, "r", now_ms=1)
    event = dead_letter(good_body(S.topic, "e1"), S, "r", now_ms=2)
    garbage = dead_letter(b"\xff not json", S, "r", now_ms=3)
    await box.keep([credential, event, garbage])
    publisher = Publisher(fail_on=event.body)
    with pytest.raises(OSError):
        await redrive(box, await box.stored(), publisher)
    assert publisher.sent == [(S.credentials_pubsub_name, S.credentials_topic, credential.body, "application/cloudevents+json")]
    assert [letter.id for letter in await box.stored()] == [event.id, garbage.id]  # not published: kept
    publisher.fail_on = None
    assert await redrive(box, await box.stored(), publisher) == 2
    assert publisher.sent[1][:2] == (S.pubsub_name, S.topic) and publisher.sent[2][3] == "application/octet-stream"
    assert await box.stored() == []


async def test_a_shard_that_keeps_changing_gives_up_with_a_clear_error():
    class AlwaysRaced(InMemoryStateRepository):
        async def commit(self, ops):
            raise EtagMismatchError("etag mismatch")

    with pytest.raises(EtagMismatchError, match="kept changing"):
        await DeadLetterBox(AlwaysRaced()).keep([dead_letter(b"x", S, "r")])


async def test_large_dead_letters_are_kept_in_transactions_that_fit():
    repo = InMemoryStateRepository()
    sizes = []
    commit = repo.commit

    async def measured(ops):
        sizes.append(sum(len(op.value) for op in ops))
        await commit(ops)

    repo.commit = measured
    box = DeadLetterBox(repo, request_max_bytes=3 << 20)
    letters = [dead_letter(bytes([n]) * (1 << 20), S, "r", now_ms=n) for n in range(8)]  # 8 messages of 1 MiB
    assert await box.keep(letters) == 8
    assert len(sizes) == 4 and max(sizes) < 4 << 20  # two a transaction (base64: 1.4 MB each)
    assert [letter.body for letter in await box.stored()] == [letter.body for letter in letters]
