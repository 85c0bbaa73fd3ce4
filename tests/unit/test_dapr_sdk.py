"""statestore.core.dapr_sdk under whichever ``dapr`` release is installed (make test-compat
runs this file beside the lowest and the highest of the tested range): the calls
statestore makes reach an in-process gRPC server by the methods daprd serves."""

from importlib.metadata import version

import grpc
import pytest

from statestore.core.dapr_sdk import BULK_PUBLISH_METHOD, add_app_callback, appcallback_pb2, appcallback_pb2_grpc
from statestore.core.dapr_sdk import dapr_pb2_grpc, pubsub_pb2
from statestore.core.sidecar import SidecarClient
from statestore.core.settings import SidecarSettings

SDK = tuple(int(part) for part in version("dapr").split(".")[:2])


def test_the_stable_bulk_publish_is_used_where_the_sdk_has_it():
    assert BULK_PUBLISH_METHOD == ("BulkPublishEvent" if SDK >= (1, 17) else "BulkPublishEventAlpha1")


@pytest.fixture
async def server():
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    yield server, port
    await server.stop(None)


async def test_a_bulk_publish_reaches_the_sidecar_by_the_sdks_method(server):
    calls = []

    class FakeSidecar(dapr_pb2_grpc.DaprServicer):
        async def BulkPublishEvent(self, request, context):
            calls.append(("BulkPublishEvent", request))
            return pubsub_pb2.BulkPublishResponse()

        async def BulkPublishEventAlpha1(self, request, context):
            calls.append(("BulkPublishEventAlpha1", request))
            return pubsub_pb2.BulkPublishResponse(
                failedEntries=[pubsub_pb2.BulkPublishResponseFailedEntry(entry_id="b", error="full")]
            )

    grpc_server, port = server
    dapr_pb2_grpc.add_DaprServicer_to_server(FakeSidecar(), grpc_server)
    await grpc_server.start()
    client = SidecarClient(SidecarSettings(dapr_grpc_port=port))
    try:
        failed = await client.bulk_publish("pubsub", "topic", [("a", b"{}"), ("b", b"{}", "key")])
    finally:
        await client.close()
    ((method, request),) = calls
    assert method == BULK_PUBLISH_METHOD
    assert [e.entry_id for e in request.entries] == ["a", "b"] and request.entries[1].metadata["partitionKey"] == "key"
    assert failed == ({} if method == "BulkPublishEvent" else {"b": "full"})


@pytest.mark.parametrize(
    "method", ["/dapr.proto.runtime.v1.AppCallback/OnBulkTopicEvent", "/dapr.proto.runtime.v1.AppCallbackAlpha/OnBulkTopicEventAlpha1"]
)
async def test_the_subscriber_serves_bulk_deliveries_by_both_names(server, method):
    """daprd 1.17+ calls OnBulkTopicEvent and only falls back to the alpha name (with a
    warning, on every delivery) when the app answers UNIMPLEMENTED: dapr 1.16's
    generated AppCallback has no such method, add_app_callback serves it anyway."""
    delivered = []

    class Servicer(appcallback_pb2_grpc.AppCallbackServicer, appcallback_pb2_grpc.AppCallbackAlphaServicer):
        async def OnBulkTopicEvent(self, request, context):
            delivered.append(request.topic)
            return appcallback_pb2.TopicEventBulkResponse()

        OnBulkTopicEventAlpha1 = OnBulkTopicEvent

    grpc_server, port = server
    add_app_callback(Servicer(), grpc_server)
    await grpc_server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            method,
            request_serializer=appcallback_pb2.TopicEventBulkRequest.SerializeToString,
            response_deserializer=appcallback_pb2.TopicEventBulkResponse.FromString,
        )
        await call(appcallback_pb2.TopicEventBulkRequest(topic="t"), timeout=5)
    assert delivered == ["t"]

