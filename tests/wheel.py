"""Builds statestore's wheel as a user's pip would (test_wheel.py, make test-compat)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from statestore.devstack.stack import PROJECT_ROOT

# What a wheel is not built from: setuptools writes build/ and *.egg-info into the tree
# it builds, so it builds from a copy of the checkout without them.
NOT_SOURCE = (".git", ".venv", ".runtime", "local", "build", "*.egg-info", "__pycache__", ".hypothesis", "tests")


def build_wheel(work: Path) -> Path:
    """The wheel of the checkout, built with pip (build isolation: setuptools from PyPI)
    in ``work``/dist from a copy in ``work``/source."""
    source, dist = work / "source", work / "dist"
    shutil.rmtree(source, ignore_errors=True)
    shutil.rmtree(dist, ignore_errors=True)
    shutil.copytree(PROJECT_ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps", "-w", str(dist), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (wheel,) = dist.glob("statestore-*.whl")
    return wheel
