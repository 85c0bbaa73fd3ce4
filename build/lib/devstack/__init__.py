"""The local development stack: Redis, daprd sidecars and the subscriber app."""

from devstack.processes import StackError
from devstack.stack import Ports, SidecarSpec, Stack

__all__ = ["Ports", "SidecarSpec", "Stack", "StackError"]
