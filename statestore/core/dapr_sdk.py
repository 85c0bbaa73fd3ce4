"""The Dapr SDK's generated gRPC code, the same for every tested ``dapr`` release (1.16-1.19).

The one place that knows how SDK releases differ (docs/compatibility.md). statestore speaks
to daprd through the SDK's generated stubs, not its clients, and three things moved
between releases:

- dapr 1.16 keeps every runtime message in ``dapr_pb2``; 1.17 split them into
  ``pubsub_pb2``, ``state_pb2``, ``binding_pb2``, ``metadata_pb2``, ``secret_pb2``, ...
  (same message and field names). Here they are imported under the 1.17 names.
- dapr 1.16's ``Dapr`` service has bulk publish only as ``BulkPublishEventAlpha1``;
  1.17 added the stable ``BulkPublishEvent`` (daprd 1.17+ serves both).
- dapr 1.16's ``AppCallback`` service has no ``OnBulkTopicEvent`` (only
  ``AppCallbackAlpha.OnBulkTopicEventAlpha1``). daprd 1.17+ calls ``OnBulkTopicEvent``
  first and falls back to the alpha method on UNIMPLEMENTED, with a warning, on every
  delivery: :func:`add_app_callback` serves it on every release.
"""

from __future__ import annotations

import grpc
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc, dapr_pb2_grpc

try:
    from dapr.proto.runtime.v1 import binding_pb2, metadata_pb2, pubsub_pb2, secret_pb2, state_pb2
except ImportError:  # dapr < 1.17: every runtime message is in dapr_pb2
    from dapr.proto.runtime.v1 import dapr_pb2

    binding_pb2 = metadata_pb2 = pubsub_pb2 = secret_pb2 = state_pb2 = dapr_pb2

__all__ = [
    "common_pb2",
    "binding_pb2",
    "metadata_pb2",
    "pubsub_pb2",
    "secret_pb2",
    "state_pb2",
    "appcallback_pb2",
    "appcallback_pb2_grpc",
    "dapr_pb2_grpc",
    "BULK_PUBLISH_METHOD",
    "bulk_publish",
    "add_app_callback",
]

# The generated stub sets its methods in __init__; the servicer class names them.
BULK_PUBLISH_METHOD = (
    "BulkPublishEvent" if hasattr(dapr_pb2_grpc.DaprServicer, "BulkPublishEvent") else "BulkPublishEventAlpha1"
)


def bulk_publish(stub: dapr_pb2_grpc.DaprStub):
    """The stub's bulk publish method: the stable one where the SDK has it."""
    return getattr(stub, BULK_PUBLISH_METHOD)


def add_app_callback(servicer, server) -> None:
    """Serve ``servicer`` (an AppCallback and AppCallbackAlpha servicer) on ``server``,
    ``OnBulkTopicEvent`` included also where the SDK's AppCallback lacks it."""
    appcallback_pb2_grpc.add_AppCallbackServicer_to_server(servicer, server)
    appcallback_pb2_grpc.add_AppCallbackAlphaServicer_to_server(servicer, server)
    if not hasattr(appcallback_pb2_grpc.AppCallbackServicer, "OnBulkTopicEvent"):
        handler = grpc.unary_unary_rpc_method_handler(
            servicer.OnBulkTopicEvent,
            request_deserializer=appcallback_pb2.TopicEventBulkRequest.FromString,
            response_serializer=appcallback_pb2.TopicEventBulkResponse.SerializeToString,
        )
        # Looked up after the SDK's own AppCallback handler, which knows no such method.
        service = grpc.method_handlers_generic_handler("dapr.proto.runtime.v1.AppCallback", {"OnBulkTopicEvent": handler})
        server.add_generic_rpc_handlers((service,))
