"""The local development stack: Redis, daprd sidecars and the subscriber app."""

from statestore.devstack.processes import StackError
from statestore.devstack.stack import Ports, SidecarSpec, Stack

__all__ = ["Ports", "SidecarSpec", "Stack", "StackError"]
