"""make test-compat: the built wheel beside the lowest and the highest ``dapr`` of the tested
range, on Python 3.11 and on the newest CPython found (docs/compatibility.md).

For each pair, a fresh venv gets the wheel (with its test extra) and the ``dapr`` release
from PyPI: the lowest is the range's lower bound (with ``dapr-ext-workflow`` at the
workflows extra's lower bound), the highest whatever pip picks as the newest in range
(dapr 1.19 ships the workflow SDK inside). Then the SDK-facing tests run in that venv
against a real stack it starts itself, so the caller library, the subscriber app and the
workflow example all run on that ``dapr``: the venv's copy of statestore is the only one
it can import (tests run from a staged folder holding a copy of tests/ and examples/ and
links to the checkout's runtime and components, named by STATESTORE_PROJECT_ROOT).

``python -m tests.compat [--python PATH ...] [--dapr lowest|highest ...]``; COMPAT_PYTHONS
(space-separated interpreters) replaces the search for Python versions.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from statestore.devstack.stack import PROJECT_ROOT
from tests.wheel import build_wheel

OUT = PROJECT_ROOT / "local" / "compat"

# The tests that cross the SDK: its generated stubs (publish, state, bindings, secrets),
# the AppCallback service the subscriber serves, and the workflow SDK.
SUITE = [
    "tests/unit/test_dapr_sdk.py",  # the compatibility point itself
    "tests/unit/test_servicer.py",  # the subscriber's answers, in the SDK's messages
    "tests/contract",  # the port contracts, in memory...
    "tests/integration/test_contract_dapr.py",  # ...and through daprd
    "tests/integration/test_acceptance.py",  # save, replace, read, delete, TTL, list, credentials
    "tests/integration/test_credentials.py::test_single_and_batched_credentials_round_trip_and_leave_no_plaintext",
    "tests/integration/test_stack_smoke.py::test_sdk_client_saves_and_reads_a_key_visible_from_a_second_app_id",
    "tests/integration/test_workflows.py",  # 20 Dapr Workflows writing state and credentials
]
# What the staged project folder links to (read-only use) and copies (imported as code).
LINKED = (".runtime", "components", "config", "runtime", "dapr.yaml")
COPIED = ("tests", "examples", "pyproject.toml")


def lower_bound(requirement: str) -> str:
    match = re.search(r">=\s*([0-9][0-9.]*)", requirement)
    if not match:
        raise SystemExit(f"test-compat: {requirement!r} in pyproject.toml has no lower bound (>=)")
    return match.group(1)


def requirement(requirements: list[str], name: str) -> str:
    return next(r for r in requirements if re.match(rf"{re.escape(name)}\s*[<>=!~]", r))


def dapr_choices() -> dict[str, list[str]]:
    """``lowest``/``highest`` -> the pip requirements that pick that end of the range."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    dapr = requirement(project["dependencies"], "dapr")
    workflow = requirement(project["optional-dependencies"]["workflows"], "dapr-ext-workflow")
    return {
        "lowest": [f"dapr=={lower_bound(dapr)}", f"dapr-ext-workflow=={lower_bound(workflow)}"],
        "highest": [dapr],
    }


def python_version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None  # e.g. a pyenv shim whose version is not selected
    major, minor = out.stdout.split()
    return int(major), int(minor)


def find_pythons() -> list[str]:
    """Python 3.11 (requires-python's floor) and the newest CPython on this machine:
    python3.N on PATH, or a pyenv installation."""
    found: dict[tuple[int, int], str] = {}
    candidates = [shutil.which(f"python3.{minor}") for minor in range(11, 30)]
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.*/bin/python3"))
    for python in filter(None, candidates):
        version = python_version(python)
        if version and version >= (3, 11):
            found.setdefault(version, python)
    if (3, 11) not in found:
        raise SystemExit("test-compat: no Python 3.11 found (python3.11 on PATH, or pyenv). Install it, or set COMPAT_PYTHONS.")
    newest = max(found)
    if newest == (3, 11):
        raise SystemExit(
            "test-compat: no CPython newer than 3.11 found (python3.N on PATH, or ~/.pyenv/versions). "
            "Install one (e.g. `pyenv install 3.13`), or set COMPAT_PYTHONS."
        )
    return [found[(3, 11)], found[newest]]


@dataclass
class Run:
    python: str
    dapr: str  # lowest | highest
    requirements: list[str]
    venv: Path = field(init=False)
    versions: dict[str, str] = field(default_factory=dict)
    install_s: float = 0.0
    test_s: float = 0.0
    summary: str = "not run"
    ok: bool = False

    def __post_init__(self) -> None:
        major, minor = python_version(self.python) or (0, 0)
        self.label = f"py{major}.{minor}-dapr-{self.dapr}"
        self.venv = OUT / "venvs" / self.label

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def install(run: Run, wheel: Path) -> None:
    """A fresh venv with the run's dapr, then the wheel and its test extra beside it, as
    an app that already has its Dapr SDK adds statestore (pip's cache makes a repeat
    cheap). In one step pip would pick the newest protobuf first and backtrack for
    minutes through OpenTelemetry releases when dapr-ext-workflow 1.16 wants protobuf<7."""
    started = time.monotonic()
    shutil.rmtree(run.venv, ignore_errors=True)
    subprocess.run([run.python, "-m", "venv", str(run.venv)], check=True, capture_output=True, timeout=300)
    pip = [str(run.bin / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for step in (run.requirements, [f"{wheel}[test]", *run.requirements]):
        out = subprocess.run([*pip, *step], capture_output=True, text=True, timeout=1200)
        if out.returncode != 0:
            raise RuntimeError(f"{run.label}: pip install {' '.join(step)} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    run.install_s = time.monotonic() - started
    probe = (
        "import importlib.metadata as m, platform, statestore\n"
        "print('python', platform.python_version()); print('statestore_file', statestore.__file__)\n"
        "for name in ('dapr', 'dapr-ext-workflow', 'grpcio', 'protobuf'):\n"
        "    try: print(name, m.version(name))\n"
        "    except m.PackageNotFoundError: print(name, '-')\n"
    )
    out = subprocess.run([str(run.bin / "python"), "-c", probe], capture_output=True, text=True, check=True,
                         cwd=OUT, env=clean_env(run))  # fmt: skip
    run.versions = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    if not run.versions["statestore_file"].startswith(str(run.venv)):
        raise RuntimeError(f"{run.label}: statestore imports from {run.versions['statestore_file']}, not the venv's wheel")


def stage() -> Path:
    """The project folder the compat runs see: no statestore source in it."""
    root = OUT / "project"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for name in LINKED:
        (root / name).symlink_to(PROJECT_ROOT / name)
    for name in COPIED:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
        else:
            shutil.copy2(source, root / name)
    return root


def clean_env(run: Run, root: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{run.bin}{os.pathsep}{env.get('PATH', '')}"
    if root is not None:
        env["STATESTORE_PROJECT_ROOT"] = str(root)
    return env


def test(run: Run, root: Path) -> None:
    started = time.monotonic()
    argv = [str(run.bin / "python"), "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", *SUITE]
    with open(OUT / f"{run.label}.log", "w") as log:
        result = subprocess.run(argv, cwd=root, env=clean_env(run, root), stdout=log, stderr=subprocess.STDOUT, timeout=1800)
    run.test_s = time.monotonic() - started
    lines = (OUT / f"{run.label}.log").read_text().splitlines()
    run.summary = next((line.strip("= ") for line in reversed(lines) if re.search(r"\d+ (passed|failed|error)", line)), "no summary")
    run.ok = result.returncode == 0


def report(runs: list[Run]) -> str:
    rows = ["| Python | dapr | dapr-ext-workflow | grpcio | protobuf | result | install | tests |", "|" + " --- |" * 8]
    for run in runs:
        v = run.versions
        workflow = v.get("dapr-ext-workflow", "-")
        rows.append(
            f"| {v.get('python', '?')} | {v.get('dapr', '?')} ({run.dapr}) | "
            f"{workflow if workflow != '-' else 'inside dapr'} | {v.get('grpcio', '?')} | {v.get('protobuf', '?')} | "
            f"{run.summary} | {run.install_s:.0f} s | {run.test_s:.0f} s |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.compat", description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", help="an interpreter to test (default: 3.11 and the newest found)")
    parser.add_argument("--dapr", action="append", choices=["lowest", "highest"], help="default: both")
    args = parser.parse_args(argv)
    pythons = args.python or os.environ.get("COMPAT_PYTHONS", "").split() or find_pythons()
    choices = dapr_choices()
    runs = [Run(python, end, choices[end]) for python in pythons for end in (args.dapr or ["lowest", "highest"])]
    OUT.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(OUT / "wheel")
    print(f"test-compat: {wheel.name}; {len(runs)} venvs: " + ", ".join(run.label for run in runs), flush=True)
    # The venvs install side by side (pip mostly waits on its cache and the disk); the
    # stacks then run one at a time.
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        installs = {run.label: pool.submit(install, run, wheel) for run in runs}
    root = stage()
    for run in runs:
        try:
            installs[run.label].result()
        except Exception as exc:  # noqa: BLE001 - reported in the table, the others still run
            run.summary = f"install failed: {exc}"
            print(run.summary, file=sys.stderr)
            continue
        print(f"test-compat: {run.label} (dapr {run.versions['dapr']}, Python {run.versions['python']})...", flush=True)
        test(run, root)
        print(f"test-compat: {run.label}: {run.summary} in {run.test_s:.0f} s (log: {OUT / (run.label + '.log')})", flush=True)
    table = report(runs)
    (OUT / "report.md").write_text(table + "\n")
    print(table)
    return 0 if all(run.ok for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
