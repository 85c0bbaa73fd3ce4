"""The `statestore` command: read, inspect and watch states, and operate the pipeline."""
