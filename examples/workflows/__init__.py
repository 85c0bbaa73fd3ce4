"""A Dapr Workflow app that reports progress and saves credentials through statestore.

`make run` runs it (``python -m examples.workflows``); see README.md, "StateStore from
workflow code".
"""
