"""statestore's core: settings, paths, the event contract, the merge and the sidecar adapter.

Shared by the publisher library and the subscriber app. Everything here but
statestore.core.sidecar is pure (no I/O, no Dapr).
"""
