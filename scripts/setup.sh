#!/usr/bin/env bash
# Sets up what is missing for `make run` / `make test`: the Python environment (.venv),
# Redis (Debian's redis-server), daprd, the Dapr CLI, placement and scheduler built from
# Go modules (and kustomize, for the deploy/kubernetes test), and the scale profile's
# servers (Java, Maven and PostgreSQL from Debian; Kafka and S3Proxy jars from Maven
# Central into .runtime/). Each step is skipped when already done.
# Usage: scripts/setup.sh [python|redis|runtime|scale|temporal|all]... (default all)
# `temporal` (the Temporal CLI, for the Temporal example and its test) is not part of `all`.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/.venv

die() { echo "setup: $*" >&2; exit 1; }

setup_python() {
  local stamp=$VENV/.installed
  if [ -f "$stamp" ] && [ "$stamp" -nt "$ROOT/pyproject.toml" ]; then
    return
  fi
  command -v python3 >/dev/null || die "python3 is not installed. Install Python 3.11 or newer."
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "Python 3.11 or newer is needed; python3 is $(python3 -V 2>&1)."
  echo "setup: creating $VENV and installing the Python dependencies..."
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" \
    || die "python3 -m venv failed. On Debian: apt-get install python3-venv."
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test,workflows,temporal]" \
    || die "pip could not install the dependencies (see above). Is PyPI reachable (pip config, proxy)?"
  touch "$stamp"
}

# apt_install WHAT PACKAGE...: install Debian packages (as root, or through sudo).
apt_install() {
  local what=$1; shift
  command -v apt-get >/dev/null \
    || die "$what is not installed and there is no apt-get: install $* yourself."
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "$what is missing; install it as root: apt-get install $*"
    sudo=sudo
  fi
  echo "setup: installing Debian's $*..."
  $sudo apt-get update -qq >/dev/null || die "apt-get update failed: are Debian's package mirrors reachable?"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null \
    || die "apt-get install $* failed (see above)."
}

setup_redis() {
  command -v redis-server >/dev/null && return
  apt_install redis-server redis-server
  # The package may start a system Redis on 6379; the stack runs its own.
  service redis-server stop >/dev/null 2>&1 || sudo service redis-server stop >/dev/null 2>&1 || true
}

setup_scale() {
  local missing=()
  command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing+=(postgresql)
  if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[*]}" "${missing[@]}"
    # The package may start a system PostgreSQL on 5432; the stack runs its own.
    service postgresql stop >/dev/null 2>&1 || true
  fi
  # Kafka and S3Proxy jars (stamped by their pom: a no-op when up to date).
  "$VENV/bin/python" -m statestore.devstack install --profile scale || die "installing the scale profile's servers failed (see above)."
}

# setup STEP...: the steps, with the Go builds (runtime, temporal) in the background
# while the venv, Redis and the scale profile's jars are installed: the two share nothing
# and mostly wait on different things (compiling; downloads, the disk, apt).
setup() {
  local python=0 redis=0 scale=0 go_steps=() log=$ROOT/.runtime/logs/setup-go.log pid=""
  for step in "$@"; do
    case "$step" in
      python) python=1 ;;
      redis) redis=1 ;;
      runtime) go_steps+=(all) ;;
      scale) python=1; scale=1 ;;
      temporal) go_steps+=(temporal) ;;
      all) python=1; redis=1; scale=1; go_steps+=(all) ;;
      *) die "usage: scripts/setup.sh [python|redis|runtime|scale|temporal|all]..." ;;
    esac
  done
  if [ ${#go_steps[@]} -gt 0 ]; then
    if [ $((python + redis + scale)) = 0 ]; then
      "$ROOT/runtime/build.sh" "${go_steps[@]}"
      return
    fi
    mkdir -p "$(dirname "$log")"
    echo "setup: building the Go parts (runtime/build.sh ${go_steps[*]}) in the background; log: $log"
    "$ROOT/runtime/build.sh" "${go_steps[@]}" > "$log" 2>&1 &
    pid=$!
  fi
  [ "$python" = 0 ] || setup_python
  [ "$redis" = 0 ] || setup_redis
  [ "$scale" = 0 ] || setup_scale
  if [ -n "$pid" ]; then
    if ! wait "$pid"; then
      cat "$log" >&2
      die "runtime/build.sh ${go_steps[*]} failed (see above)."
    fi
    cat "$log"
  fi
}

setup "${@:-all}"
