"""StateStore inside Temporal: a workflow that reads its arguments with ``get_workflow_args``
(``StateStore.get_state``), whose activities report progress with ``StateStore.save_state``
and read credentials by guid (``make run ENGINE=temporal``; docs/examples.md).

- ``shared``: the workflow's inputs and results, and the state a run must leave;
- ``workflow``: the workflow (deterministic: it calls no StateStore);
- ``activities``: the activities (they call StateStore);
- ``worker``: the worker process (``python -m examples.temporal.worker``);
- ``run``: the starter: saves N workflows' arguments, starts them, checks what they left.
"""
