"""The stack's port check: a clear error for a port someone listens on, and for one a
closed connection still holds (TIME_WAIT), which is not the same advice."""

import socket

import pytest

from statestore.devstack.processes import StackError, ensure_port_free


def test_a_port_something_listens_on_is_named_with_what_to_stop():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with pytest.raises(StackError, match=f"port {port} \\(caller sidecar\\) is already in use.*make down"):
            ensure_port_free(port, "caller sidecar")


def test_a_port_a_closed_connection_still_holds_says_to_retry():
    # A client that closes first leaves its own (ephemeral) port in TIME_WAIT, as the
    # connections of a stack just stopped do: nothing listens, yet no listener can bind.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.socket()
        client.bind(("127.0.0.1", 0))
        port = client.getsockname()[1]
        client.connect(server.getsockname())
        accepted, _ = server.accept()
        client.close()
        accepted.close()
        with pytest.raises(StackError, match=f"port {port} \\(worker sidecar\\) cannot be listened on yet.*TIME_WAIT"):
            ensure_port_free(port, "worker sidecar")


def test_free_ports_lie_below_the_ephemeral_range_and_never_repeat():
    # A port of the ephemeral range can be taken by an outgoing connection before the
    # server it was picked for binds it.
    from statestore.devstack.processes import _ephemeral_low, free_port

    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(port < _ephemeral_low() for port in ports)
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # still free
