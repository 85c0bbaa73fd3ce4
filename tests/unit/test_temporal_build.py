"""`runtime/build.sh temporal`: skipped when the binary's stamp matches the pinned version
and Go; built again (with `go install` of the pinned version) when it does not.

A stand-in `go` on PATH records every call, so these tests show what the script would run
without compiling the 250 MB binary (the integration test uses the real one)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VERSION = (ROOT / "runtime" / "temporal" / "VERSION").read_text().strip()
FAKE_GO_VERSION = "go1.26.8"

FAKE_GO = f"""#!/bin/sh
echo "$*" >> "$GO_CALLS"
case "$1 $2" in
  "env GOVERSION") echo {FAKE_GO_VERSION} ;;
  "install "*) mkdir -p "$GOBIN" && printf '#!/bin/sh\\necho new\\n' > "$GOBIN/temporal" && chmod +x "$GOBIN/temporal" ;;
  *) echo "unexpected go $*" >&2; exit 2 ;;
esac
"""


def run_build(tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    go = bin_dir / "go"
    go.write_text(FAKE_GO)
    go.chmod(go.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "go-calls"
    calls.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GO_CALLS": str(calls),
           "STATESTORE_RUNTIME_DIR": str(tmp_path / "runtime")}  # fmt: skip
    done = subprocess.run([str(ROOT / "runtime" / "build.sh"), "temporal"], env=env, capture_output=True, text=True)
    return done, calls.read_text().splitlines() if calls.exists() else []


def installs(calls: list[str]) -> list[str]:
    return [call for call in calls if call.startswith("install")]


def test_an_up_to_date_temporal_cli_is_not_built_again(tmp_path):
    done, calls = run_build(tmp_path)  # nothing there yet: built
    assert done.returncode == 0, done.stderr
    assert len(installs(calls)) == 1 and installs(calls)[0].endswith(f"github.com/temporalio/cli/cmd/temporal@{VERSION}")
    binary = tmp_path / "runtime" / "temporal" / "temporal"
    binary.write_text("#!/bin/sh\necho built before\n")  # to see that it is left alone
    done, calls = run_build(tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"temporal CLI {VERSION}: up to date" in done.stdout
    assert installs(calls) == [], calls
    assert binary.read_text() == "#!/bin/sh\necho built before\n"


def test_a_stamp_of_another_version_or_go_rebuilds_the_pinned_version(tmp_path):
    run_build(tmp_path)
    stampfile = tmp_path / "runtime" / "temporal" / "temporal.stamp"
    stamp = stampfile.read_text().split()
    assert stamp[0] == VERSION and stamp[-1] == FAKE_GO_VERSION
    for stale in ([ "v0.0.1", *stamp[1:]], [*stamp[:-1], "go1.20"]):
        stampfile.write_text(" ".join(stale) + "\n")
        done, calls = run_build(tmp_path)
        assert done.returncode == 0, done.stderr
        assert len(installs(calls)) == 1 and "up to date" not in done.stdout
        assert stampfile.read_text().split() == stamp
