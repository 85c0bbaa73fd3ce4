"""Issue 13.5: the built wheel, installed into a fresh venv, works against the stack.

The wheel is built with pip (tests/wheel.py) and installed with ``--no-deps``, and the
project venv's site-packages is put behind it for the dependencies (no PyPI round trip in
the test; make test-compat installs them from PyPI); the script runs from a directory
outside the repository, so only the installed copy can be imported.
"""

from __future__ import annotations

import email
import subprocess
import sys
import sysconfig
import textwrap
import uuid
import zipfile
from pathlib import Path

from tests.wheel import build_wheel

CALLER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import statestore.publisher
    from statestore import StateStore, StateType

    assert "/fresh/" in statestore.publisher.__file__, statestore.publisher.__file__

    async def main(state_id):
        await StateStore.save_state_object(state_id, {"status": "installed"}, StateType.WORKFLOWS)
        await StateStore.save_state("progress", 100, state_id, StateType.WORKFLOWS)
        await StateStore.sync(state_id, StateType.WORKFLOWS, timeout=30)
        print(await StateStore.get_state(state_id, StateType.WORKFLOWS))

    asyncio.run(main(sys.argv[1]))
    """
)


def run(argv, **kwargs):
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300, **kwargs)


def test_the_installed_wheel_saves_and_reads_against_the_stack(stack, tmp_path):
    wheel = build_wheel(tmp_path)

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.message_from_bytes(archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    base = [r.split(";")[0].strip() for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert not any(r.lower().startswith(("pyyaml", "redis", "typer", "rich", "matplotlib")) for r in base), base
    assert "statestore/py.typed" in names
    # One import name: nothing but statestore/ beside the metadata (issue 28).
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"statestore"}, names
    assert {"statestore/publisher/store.py", "statestore/subscriber/app.py", "statestore/core/document.py"} <= set(names)
    assert "statestore = statestore.pytest_plugin" in entry_points and "statestore-subscriber" in entry_points

    fresh = tmp_path / "fresh"
    run([sys.executable, "-m", "venv", "--without-pip", str(fresh)])
    python = fresh / "bin" / "python"
    fresh_site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", fresh_site, str(wheel)])
    # The dependencies: the project venv's, behind the installed wheel.
    Path(fresh_site, "zz_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    state_id = f"wheel-{uuid.uuid4().hex[:8]}"
    env = {"PATH": "/usr/bin:/bin", **stack.caller_env()}
    env.pop("PYTHONPATH", None)
    outside = tmp_path / "app"
    outside.mkdir()
    out = run([str(python), "-c", CALLER_SCRIPT, state_id], cwd=outside, env=env).stdout
    assert out.strip() == "{'status': 'installed', 'progress': 100}"
