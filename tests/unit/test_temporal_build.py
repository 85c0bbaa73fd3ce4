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


def install_binary(tmp_path: Path, stamp: str) -> Path:
    folder = tmp_path / "runtime" / "temporal"
    folder.mkdir(parents=True)
    binary = folder / "temporal"
    binary.write_text("#!/bin/sh\necho old\n")
    binary.chmod(0o755)
    (folder / "temporal.stamp").write_text(stamp + "\n")
    return binary


def test_an_up_to_date_temporal_cli_is_not_built_again(tmp_path):
    binary = install_binary(tmp_path, f"{VERSION} {FAKE_GO_VERSION}")
    done, calls = run_build(tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"temporal CLI {VERSION}: up to date" in done.stdout
    assert not any(call.startswith("install") for call in calls), calls
    assert binary.read_text() == "#!/bin/sh\necho old\n"


def test_a_stale_stamp_rebuilds_the_pinned_version(tmp_path):
    binary = install_binary(tmp_path, f"v0.0.1 {FAKE_GO_VERSION}")  # another version was built
    done, calls = run_build(tmp_path)
    assert done.returncode == 0, done.stderr
    installs = [call for call in calls if call.startswith("install")]
    assert len(installs) == 1 and installs[0].endswith(f"github.com/temporalio/cli/cmd/temporal@{VERSION}"), calls
    assert "echo new" in binary.read_text()
    assert (binary.parent / "temporal.stamp").read_text().strip() == f"{VERSION} {FAKE_GO_VERSION}"
    # And now it is up to date.
    done, calls = run_build(tmp_path)
    assert "up to date" in done.stdout and not any(call.startswith("install") for call in calls)

