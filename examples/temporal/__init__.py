"""StateStore inside Temporal: a workflow whose activities report progress with
``StateStore.save_state`` and read credentials by guid (``make run ENGINE=temporal``).

- ``shared``: the workflow's inputs and results, and the state a run must leave;
- ``workflow``: the workflow (deterministic: it calls no StateStore);
- ``activities``: the activities (they call StateStore);
- ``worker``: the worker process (``python -m examples.temporal.worker``);
- ``run``: the starter: saves credentials, starts N workflows, checks what they left.
"""
