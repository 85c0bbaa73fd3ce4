"""Stopping a benchmark's stack and removing its files."""

from __future__ import annotations

import shutil
import sys

from statestore.devstack import Stack


def stop(stack: Stack) -> None:
    """Stop ``stack``; remove its folder unless the benchmark is failing (call it in a
    ``finally``). A fleet run leaves millions of snapshot files behind (11 GB for the full
    sizes): kept, they fill the disk and slow the file system for the runs after. A failed
    run keeps them, with its logs, and says where."""
    stack.down()
    if sys.exc_info()[0] is None:
        shutil.rmtree(stack.base, ignore_errors=True)
    else:
        print(f"the benchmark failed: its stack's files and logs are kept in {stack.base}", file=sys.stderr)
