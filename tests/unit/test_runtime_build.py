"""runtime/build.sh builds daprd, placement and scheduler in one go build, once, and skips
them while up to date."""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "runtime" / "build.sh"

FAKE_GO = """#!/usr/bin/env bash
# Records each call; "builds" an empty executable per package into the folder -o names
# (named as go names them: the main module's package "." is daprd).
echo "$*" >> "$GO_CALLS"
case "$1 $2" in
  "env GOVERSION") echo go-fake ;;
  "env GOPROXY") echo off ;;
  "mod download") echo '{"Dir": "'"$FAKE_MODULE"'"}' ;;
  build*) while [ $# -gt 0 ]; do [ "$1" = -o ] && { out=$2; shift 2; break; }; shift; done
          for pkg in "$@"; do name=$(basename "$pkg"); [ "$pkg" = . ] && name=daprd
            printf '#!/bin/true\\n' > "$out/$name"; chmod +x "$out/$name"; done ;;
esac
"""


HEALTHZ = 'package server\n\nfunc listen() { net.Listen("tcp", fmt.Sprintf(":%d", s.port)) }\n'


def run_build(env: dict[str, str]) -> str:
    done = subprocess.run([str(BUILD), "dapr"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def fake_go_env(tmp_path: Path) -> dict[str, str]:
    bin_dir, module = tmp_path / "bin", tmp_path / "dapr-module"
    bin_dir.mkdir()
    (module / "cmd" / "placement").mkdir(parents=True)
    (module / "cmd" / "scheduler").mkdir(parents=True)
    (module / "pkg" / "healthz" / "server").mkdir(parents=True)
    (module / "cmd" / "daprd" / "components").mkdir(parents=True)
    (module / "pkg" / "healthz" / "server" / "server.go").write_text(HEALTHZ)
    go = bin_dir / "go"
    go.write_text(FAKE_GO)
    go.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GO_CALLS": str(tmp_path / "calls"),
            "FAKE_MODULE": str(module), "STATESTORE_RUNTIME_DIR": str(tmp_path / "runtime"),
            "STATESTORE_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip


def builds(tmp_path: Path) -> list[str]:
    calls = tmp_path / "calls"
    return [c for c in calls.read_text().splitlines() if c.startswith("build")] if calls.exists() else []


def test_the_second_build_is_skipped_and_a_stale_stamp_rebuilds(tmp_path):
    env = fake_go_env(tmp_path)
    assert "building from Go modules" in run_build(env)
    (build,) = builds(tmp_path)  # one go build for the three
    assert build.split()[-3:] == [".", "github.com/dapr/dapr/cmd/placement", "github.com/dapr/dapr/cmd/scheduler"]
    out = tmp_path / "runtime" / ".dapr" / "bin"
    assert all((out / name).exists() for name in ("daprd", "placement", "scheduler"))
    assert not (tmp_path / "runtime" / "build").exists(), "the build folder is removed"
    (copy,) = (tmp_path / "cache").iterdir()  # the patched module copy, kept for other checkouts
    assert "127.0.0.1:%d" in (copy / "pkg" / "healthz" / "server" / "server.go").read_text()
    assert (copy / "cmd" / "daprd" / "components" / "zz_notag.go").read_text() == "package components\n"

    assert re.search(r"daprd, placement, scheduler v\S+: up to date", run_build(env))
    assert len(builds(tmp_path)) == 1, "an up-to-date runtime must not be rebuilt"

    (out / "dapr.stamp").write_text("an older recipe\n")
    assert "building from Go modules" in run_build(env)
    assert len(builds(tmp_path)) == 2


def test_a_missing_binary_is_rebuilt_despite_its_stamp(tmp_path):
    env = fake_go_env(tmp_path)
    run_build(env)
    (tmp_path / "runtime" / ".dapr" / "bin" / "scheduler").unlink()
    assert "building from Go modules" in run_build(env)


def test_the_real_runtime_is_up_to_date_after_setup_and_not_rebuilt():
    out = ROOT / ".runtime" / ".dapr" / "bin"
    binaries = [out / "daprd", out / "placement", out / "scheduler"]
    assert all(b.exists() for b in binaries), "run `make setup` (runtime/build.sh dapr) first"
    before = [b.stat().st_mtime_ns for b in binaries]
    stdout = run_build({**os.environ})
    assert re.search(r"daprd, placement, scheduler v\S+: up to date", stdout)
    assert [b.stat().st_mtime_ns for b in binaries] == before


def test_named_steps_build_at_once_and_each_output_is_shown(tmp_path):
    env = fake_go_env(tmp_path)
    done = subprocess.run([str(BUILD), "engine", "kustomize", "daprd"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("daprd, placement, scheduler") == 2 and "kustomize" in done.stdout  # building, built
    assert len(builds(tmp_path)) == 1, "a step named twice runs once"


def test_a_changed_upstream_healthz_server_stops_the_build_with_a_clear_error(tmp_path):
    env = fake_go_env(tmp_path)
    (tmp_path / "dapr-module" / "pkg" / "healthz" / "server" / "server.go").write_text("package server\n")
    done = subprocess.run([str(BUILD), "engine"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "changed upstream" in done.stderr
    assert builds(tmp_path) == []
