"""The README's API block runs as written against the real stack (issue 28.5): a newcomer
who pastes it into an async function gets no error."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from statestore.devstack.stack import PROJECT_ROOT
from tests.integration.conftest import python_env


def readme_api_block() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## The API", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_readme_api_block_runs_as_written(stack):
    block = readme_api_block()
    assert "await StateStore.save_state_object(" in block and "StateStoreClient(" in block
    script = "import asyncio\n\nasync def main():\n" + textwrap.indent(block, "    ") + "\n    print(state, config)\n\nasyncio.run(main())\n"
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script], cwd=PROJECT_ROOT,
                                   env=python_env(stack), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # get_state right after save_state_object (and save_state) in the same process
    assert "'workflow_id': 'wf-123'" in done.stdout and "'progress': 75" in done.stdout, done.stdout
    assert "'password': 's3cret'" in done.stdout
