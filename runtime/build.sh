#!/usr/bin/env bash
# Builds daprd (with only our components) and the workflow engine's placement and
# scheduler services, the Dapr CLI, from Go modules into .runtime/, where the CLI looks for
# them (runtimePath), kustomize (the deploy/kubernetes test) into .runtime/bin, and on
# request the Temporal CLI (its dev server) into .runtime/temporal/. Skips what is already
# built for the pinned versions; builds the steps it is given at once. Nothing is
# downloaded except through the Go module proxy.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC=$ROOT/runtime/daprd
OUT=${STATESTORE_RUNTIME_DIR:-$ROOT/.runtime}
CLI_SRC=$ROOT/runtime/cli
# Shared by every checkout on the machine (the patched dapr module copy).
CACHE=${STATESTORE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/statestore}

die() { echo "runtime/build.sh: $*" >&2; exit 1; }
# built BIN STAMPFILE STAMP: BIN exists and was built from the recipe STAMP names.
built() { [ -x "$1" ] && [ "$(cat "$2" 2>/dev/null)" = "$3" ]; }

command -v go >/dev/null || die "Go is not installed. Install Go 1.26 (https://go.dev/dl or the distribution package) and run again."
# GOTOOLCHAIN=local: an old Go says so instead of trying to download a newer one.
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

dapr_version=$(awk '$1 == "github.com/dapr/dapr" {print $2; exit}' "$SRC/go.mod")
[ -n "$dapr_version" ] || die "no github.com/dapr/dapr requirement in $SRC/go.mod"

build_dapr() {
  # daprd (with our component list) and the workflow engine's placement and scheduler, in
  # one `go build` against one module graph: runtime/daprd's go.mod, whose versions are
  # upstream's for every package placement and scheduler use (docs/runtime.md), so the
  # packages the three share are compiled once.
  local bin=$OUT/.dapr/bin stampfile=$OUT/.dapr/bin/dapr.stamp stamp name missing=0
  # The stamp covers this step's own recipe, not the whole script: adding another build
  # step must not rebuild these.
  stamp="$dapr_version $( (cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go"; declare -f build_dapr prepare_dapr_copy fetch_dapr_module) | sha256sum | cut -c1-16) $(go env GOVERSION)"
  for name in daprd placement scheduler; do [ -x "$bin/$name" ] || missing=1; done
  if [ "$missing" = 0 ] && [ "$(cat "$stampfile" 2>/dev/null)" = "$stamp" ]; then
    echo "daprd, placement, scheduler $dapr_version: up to date ($bin)"
    return
  fi
  echo "daprd, placement, scheduler $dapr_version: building from Go modules (a cold build takes several minutes)..."
  local moddir copy work=$OUT/build
  moddir=$(fetch_dapr_module)
  # The private copy of the module sits in a cache shared by every checkout on the machine,
  # named by its version and recipe: its path goes into the binaries' build info, so with
  # one path for all checkouts Go's build cache serves a fresh clone's links too.
  copy=$CACHE/dapr-$dapr_version-$(declare -f prepare_dapr_copy | sha256sum | cut -c1-12)
  [ -d "$copy" ] || prepare_dapr_copy "$moddir" "$copy"
  rm -rf "$work" && mkdir -p "$work/out" "$bin"
  cp "$SRC/go.mod" "$SRC/go.sum" "$work/"
  echo "replace github.com/dapr/dapr => $copy" >> "$work/go.mod"
  (cd "$SRC" && go build -modfile="$work/go.mod" -trimpath -ldflags "-s -w" -o "$work/out/" \
      . github.com/dapr/dapr/cmd/placement github.com/dapr/dapr/cmd/scheduler) \
    || die "building daprd, placement and scheduler failed (see the Go errors above). If a module could not be fetched, check the network and GOPROXY."
  for name in daprd placement scheduler; do mv "$work/out/$name" "$bin/$name"; done
  rm -rf "$work"
  echo "$stamp" > "$stampfile"
  echo "daprd, placement, scheduler $dapr_version: built in $bin ($(du -ch "$bin/daprd" "$bin/placement" "$bin/scheduler" | tail -1 | cut -f1))"
}

prepare_dapr_copy() {
  # prepare_dapr_copy MODULE_DIR COPY: a patched copy of the (read-only) dapr module.
  local tmp=$2.tmp.$$
  rm -rf "$tmp" && mkdir -p "$(dirname "$2")"
  cp -r "$1" "$tmp" && chmod -R u+w "$tmp"
  # Upstream's daprd components package panics when built without its component tags;
  # its no-tag file is emptied, so main.go picks components.
  echo "package components" > "$tmp/cmd/daprd/components/zz_notag.go"
  # Upstream's healthz server (placement's and scheduler's) binds every interface (both
  # ignore --healthz-listen-address): here it binds 127.0.0.1.
  local healthz=$tmp/pkg/healthz/server/server.go
  grep -q 'fmt.Sprintf(":%d", s.port)' "$healthz" || { rm -rf "$tmp"; die "$healthz changed upstream: check how its listen address is set"; }
  sed -i 's|fmt.Sprintf(":%d", s.port)|fmt.Sprintf("127.0.0.1:%d", s.port)|' "$healthz"
  # Another checkout may have made the same copy meanwhile: keep the first.
  mv -T "$tmp" "$2" 2>/dev/null || rm -rf "$tmp"
}

fetch_dapr_module() {
  # Prints the module cache folder of github.com/dapr/dapr at daprd's version.
  (cd "$SRC" && go mod download -json "github.com/dapr/dapr@$dapr_version" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))') \
    || die "could not fetch github.com/dapr/dapr@$dapr_version from the Go module proxy ($(go env GOPROXY)). Check the network and GOPROXY."
}

build_cli() {
  # `go install github.com/dapr/cli@v` fails here (the proxy refuses the module's
  # version list, and one of its pinned dependencies), so runtime/cli pins it as a tool.
  local bin=$OUT/bin/dapr stampfile=$OUT/bin/dapr.stamp stamp cli_version
  cli_version=$(awk '$1 == "github.com/dapr/cli" {print $2; exit}' "$CLI_SRC/go.mod")
  stamp="$(cat "$CLI_SRC/go.mod" "$CLI_SRC/go.sum" | sha256sum | cut -c1-16) $(go env GOVERSION)"
  if built "$bin" "$stampfile" "$stamp"; then
    echo "dapr CLI $cli_version: up to date ($bin)"
    return
  fi
  echo "dapr CLI $cli_version: building from Go modules..."
  mkdir -p "$OUT/bin"
  (cd "$CLI_SRC" && go build -trimpath -ldflags "-s -w -X main.version=${cli_version#v}" -o "$bin.tmp" github.com/dapr/cli) \
    || die "building the Dapr CLI failed (see the Go errors above). If a module could not be fetched, check the network and GOPROXY."
  mv "$bin.tmp" "$bin"
  echo "$stamp" > "$stampfile"
  echo "dapr CLI $cli_version: built $bin ($(du -h "$bin" | cut -f1))"
}

build_kustomize() {
  # Renders deploy/kubernetes for its test. v5.8.1: later releases need a newer Go.
  local version=v5.8.1 bin=$OUT/bin/kustomize stampfile=$OUT/bin/kustomize.stamp stamp
  stamp="$version $(go env GOVERSION)"
  if built "$bin" "$stampfile" "$stamp"; then
    echo "kustomize $version: up to date ($bin)"
    return
  fi
  echo "kustomize $version: building from Go modules..."
  mkdir -p "$OUT/bin"
  GOBIN="$OUT/bin" GOFLAGS= go install "sigs.k8s.io/kustomize/kustomize/v5@$version" \
    || die "building kustomize failed (see the Go errors above). If a module could not be fetched, check the network and GOPROXY."
  echo "$stamp" > "$stampfile"
}

build_temporal() {
  # The Temporal CLI embeds a dev server on sqlite (`temporal server start-dev`). Only
  # `make run ENGINE=temporal`, `make up TEMPORAL=1` and the Temporal tests need it, so
  # `all` leaves it out. v1.5.1 is pinned: later releases replace a module with a folder
  # that their module zip lacks, so `go install` cannot build them from the proxy.
  local version bin=$OUT/temporal/temporal stampfile=$OUT/temporal/temporal.stamp stamp
  version=$(tr -d '[:space:]' < "$ROOT/runtime/temporal/VERSION")
  [ -n "$version" ] || die "runtime/temporal/VERSION is empty: put a Temporal CLI version in it (e.g. v1.5.1)."
  # The stamp covers this step's own recipe, so another step's change does not rebuild it.
  stamp="$version $(declare -f build_temporal | sha256sum | cut -c1-16) $(go env GOVERSION)"
  if built "$bin" "$stampfile" "$stamp"; then
    echo "temporal CLI $version: up to date ($bin)"
    return
  fi
  echo "temporal CLI $version: building from Go modules (a cold build takes a few minutes)..."
  mkdir -p "$OUT/temporal"
  GOBIN="$OUT/temporal/.gobin" go install -trimpath -ldflags "-s -w" \
    "github.com/temporalio/cli/cmd/temporal@$version" \
    || die "building the Temporal CLI $version failed (see the Go errors above). If a module could not be fetched, check the network and GOPROXY."
  mv "$OUT/temporal/.gobin/temporal" "$bin"
  rmdir "$OUT/temporal/.gobin"
  echo "$stamp" > "$stampfile"
  echo "temporal CLI $version: built $bin ($(du -h "$bin" | cut -f1))"
}

# in_parallel STEP...: runs the build steps at once (Go compiles on every core, but module
# downloads and each binary's link overlap another step's compiling), each step's output
# shown whole when it ends; fails when any step failed.
in_parallel() {
  local logs=$OUT/logs names=("$@") pids=() i status=0
  mkdir -p "$logs"
  for step in "$@"; do
    ( "$step" ) > "$logs/$step.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || status=1
    cat "$logs/${names[$i]}.log"
  done
  return $status
}

# Usage: runtime/build.sh [dapr|cli|kustomize|temporal|all]... (daprd and engine: dapr).
# `all` is dapr, cli and kustomize; the Temporal CLI only when named.
steps=()
for arg in "${@:-all}"; do
  case "$arg" in
    dapr|daprd|engine) steps+=(build_dapr) ;;
    cli) steps+=(build_cli) ;;
    kustomize) steps+=(build_kustomize) ;;
    temporal) steps+=(build_temporal) ;;
    all) steps+=(build_dapr build_cli build_kustomize) ;;
    *) die "usage: runtime/build.sh [dapr|cli|kustomize|temporal|all]..." ;;
  esac
done
# A step named twice runs once.
mapfile -t steps < <(printf '%s\n' "${steps[@]}" | awk '!seen[$0]++')
if [ ${#steps[@]} = 1 ]; then
  "${steps[0]}"
else
  in_parallel "${steps[@]}"
fi
