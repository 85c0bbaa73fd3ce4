"""statestore's caller-facing library, installed as ``statestore.publisher``.

Apps import its API from the package root::

    from statestore import StateStore, StateType, build_state_store_path

    await StateStore.save_state("progress", 75, "workflow-123", StateType.WORKFLOWS)
    state = await StateStore.get_state("workflow-123", StateType.WORKFLOWS)

Modules: ``store`` (StateStore), ``secrets`` (SecretStore), ``runtime`` (the process's
identity, clock, channels and pipelines), ``pipeline`` (batching and publishing),
``query`` (direct reads), ``crypto`` and ``keys`` (credential sealing and the keyring).
"""
