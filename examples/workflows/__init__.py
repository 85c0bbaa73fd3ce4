"""A Dapr Workflow app that reads its arguments and reports progress through statestore.

`make run` runs it (``python -m examples.workflows``); see docs/examples.md.
"""
