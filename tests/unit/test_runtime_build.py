"""runtime/build.sh builds placement and scheduler once, and skips them while up to date."""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "runtime" / "build.sh"

FAKE_GO = """#!/usr/bin/env bash
# Records each call; "builds" an empty executable where -o says.
echo "$*" >> "$GO_CALLS"
case "$1 $2" in
  "env GOVERSION") echo go-fake ;;
  "env GOPROXY") echo off ;;
  "mod download") echo '{"Dir": "'"$FAKE_MODULE"'"}' ;;
  build*) while [ $# -gt 0 ]; do [ "$1" = -o ] && { printf '#!/bin/true\\n' > "$2"; chmod +x "$2"; }; shift; done ;;
esac
"""


HEALTHZ = 'package server\n\nfunc listen() { net.Listen("tcp", fmt.Sprintf(":%d", s.port)) }\n'


def run_build(env: dict[str, str]) -> str:
    done = subprocess.run([str(BUILD), "engine"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def fake_go_env(tmp_path: Path) -> dict[str, str]:
    bin_dir, module = tmp_path / "bin", tmp_path / "dapr-module"
    bin_dir.mkdir()
    (module / "cmd" / "placement").mkdir(parents=True)
    (module / "cmd" / "scheduler").mkdir(parents=True)
    (module / "pkg" / "healthz" / "server").mkdir(parents=True)
    (module / "pkg" / "healthz" / "server" / "server.go").write_text(HEALTHZ)
    go = bin_dir / "go"
    go.write_text(FAKE_GO)
    go.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GO_CALLS": str(tmp_path / "calls"),
            "FAKE_MODULE": str(module), "STATESTORE_RUNTIME_DIR": str(tmp_path / "runtime")}  # fmt: skip


def builds(tmp_path: Path) -> list[str]:
    calls = tmp_path / "calls"
    return [c for c in calls.read_text().splitlines() if c.startswith("build")] if calls.exists() else []


def test_the_second_build_of_the_engine_is_skipped_and_a_stale_stamp_rebuilds(tmp_path):
    env = fake_go_env(tmp_path)
    assert "building from Go modules" in run_build(env)
    assert [c.split()[-1] for c in builds(tmp_path)] == ["./cmd/placement", "./cmd/scheduler"]
    out = tmp_path / "runtime" / ".dapr" / "bin"
    assert (out / "placement").exists() and (out / "scheduler").exists()
    assert not (tmp_path / "runtime" / "build-engine").exists(), "the private module copy is removed"

    assert re.search(r"placement, scheduler v\S+: up to date", run_build(env))
    assert len(builds(tmp_path)) == 2, "an up-to-date engine must not be rebuilt"

    (out / "engine.stamp").write_text("an older recipe\n")
    assert "building from Go modules" in run_build(env)
    assert len(builds(tmp_path)) == 4


def test_a_missing_binary_is_rebuilt_despite_its_stamp(tmp_path):
    env = fake_go_env(tmp_path)
    run_build(env)
    (tmp_path / "runtime" / ".dapr" / "bin" / "scheduler").unlink()
    assert "building from Go modules" in run_build(env)


def test_the_real_engine_is_up_to_date_after_setup_and_not_rebuilt():
    out = ROOT / ".runtime" / ".dapr" / "bin"
    binaries = [out / "placement", out / "scheduler"]
    assert all(b.exists() for b in binaries), "run `make setup` (runtime/build.sh engine) first"
    before = [b.stat().st_mtime_ns for b in binaries]
    stdout = run_build({**os.environ})
    assert re.search(r"placement, scheduler v\S+: up to date", stdout)
    assert [b.stat().st_mtime_ns for b in binaries] == before


def test_a_changed_upstream_healthz_server_stops_the_build_with_a_clear_error(tmp_path):
    env = fake_go_env(tmp_path)
    (tmp_path / "dapr-module" / "pkg" / "healthz" / "server" / "server.go").write_text("package server\n")
    done = subprocess.run([str(BUILD), "engine"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "changed upstream" in done.stderr
    assert builds(tmp_path) == []
