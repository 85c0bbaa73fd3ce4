"""Jars from Maven Central, resolved by Maven from a pom under runtime/, cached and stamped."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from statestore.devstack.processes import StackError

__all__ = ["install_jars", "java"]


def java() -> str:
    path = shutil.which("java")
    if not path:
        raise StackError("java is not installed: install a Java 17+ runtime (apt-get install openjdk-17-jre-headless).")
    return path


def install_jars(pom: Path, lib: Path, what: str) -> bool:
    """Copy ``pom``'s runtime dependencies into ``lib`` unless ``lib`` is up to date.

    Returns True when it installed. The stamp is the pom's hash: editing a version
    re-resolves; an unchanged pom is a no-op (no Maven call).
    """
    stamp = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    stamp_file = lib / ".stamp"
    if lib.is_dir() and stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        return False
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError(f"mvn is not installed; {what} comes from Maven Central: run `make setup` (installs Maven).")
    print(f"setup: {what}: resolving jars from Maven Central into {lib}...", flush=True)
    tmp = lib.with_name(lib.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
         f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"],
        capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise StackError(
            f"Maven could not resolve {what} ({pom}); is Maven Central reachable (~/.m2/settings.xml, proxy)?\n"
            + (result.stdout + result.stderr)[-2000:]
        )
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    stamp_file.write_text(stamp + "\n")
    print(f"setup: {what}: {len(list(lib.glob('*.jar')))} jars in {lib}", flush=True)
    return True
