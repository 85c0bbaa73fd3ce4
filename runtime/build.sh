#!/usr/bin/env bash
# Builds daprd (with only our components), the Dapr CLI, and the workflow engine's
# placement and scheduler services from Go modules into .runtime/, where the CLI looks for
# them (runtimePath), kustomize (the deploy/kubernetes test) into .runtime/bin, and on
# request the Temporal CLI (its dev server) into .runtime/temporal/. Skips what is already
# built for the pinned versions. Nothing is downloaded except through the Go module proxy.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC=$ROOT/runtime/daprd
OUT=${STATESTORE_RUNTIME_DIR:-$ROOT/.runtime}
CLI_SRC=$ROOT/runtime/cli

die() { echo "runtime/build.sh: $*" >&2; exit 1; }
# built BIN STAMPFILE STAMP: BIN exists and was built from the recipe STAMP names.
built() { [ -x "$1" ] && [ "$(cat "$2" 2>/dev/null)" = "$3" ]; }

command -v go >/dev/null || die "Go is not installed. Install Go 1.26 (https://go.dev/dl or the distribution package) and run again."
# GOTOOLCHAIN=local: an old Go says so instead of trying to download a newer one.
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

dapr_version=$(awk '$1 == "github.com/dapr/dapr" {print $2; exit}' "$SRC/go.mod")
[ -n "$dapr_version" ] || die "no github.com/dapr/dapr requirement in $SRC/go.mod"

build_daprd() {
  local bin=$OUT/.dapr/bin/daprd stampfile=$OUT/.dapr/bin/daprd.stamp stamp
  # The stamp covers this step's own recipe, not the whole script: adding another build
  # step must not rebuild daprd.
  stamp="$( (cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go"; declare -f build_daprd fetch_dapr_module) | sha256sum | cut -c1-16) $(go env GOVERSION)"
  if built "$bin" "$stampfile" "$stamp"; then
    echo "daprd $dapr_version: up to date ($bin)"
    return
  fi
  echo "daprd $dapr_version: building from Go modules (a cold build takes several minutes)..."
  local moddir work=$OUT/build
  moddir=$(fetch_dapr_module)
  # Upstream's daprd components package panics when built without its component tags;
  # in a private copy of the module that file is emptied, so main.go picks components.
  rm -rf "$work" && mkdir -p "$work" "$OUT/.dapr/bin"
  cp -r "$moddir" "$work/dapr" && chmod -R u+w "$work/dapr"
  echo "package components" > "$work/dapr/cmd/daprd/components/zz_notag.go"
  cp "$SRC/go.mod" "$SRC/go.sum" "$work/"
  echo "replace github.com/dapr/dapr => $work/dapr" >> "$work/go.mod"
  (cd "$SRC" && go build -modfile="$work/go.mod" -trimpath -ldflags "-s -w" -o "$bin.tmp" .) \
    || die "building daprd failed (see the Go errors above). If a module could not be fetched, check the network and GOPROXY."
  mv "$bin.tmp" "$bin"
  rm -rf "$work"
  echo "$stamp" > "$stampfile"
  echo "daprd $dapr_version: built $bin ($(du -h "$bin" | cut -f1))"
}

fetch_dapr_module() {
  # Prints the module cache folder of github.com/dapr/dapr at daprd's version.
  (cd "$SRC" && go mod download -json "github.com/dapr/dapr@$dapr_version" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))') \
    || die "could not fetch github.com/dapr/dapr@$dapr_version from the Go module proxy ($(go env GOPROXY)). Check the network and GOPROXY."
}

build_engine() {
  # Dapr Workflows need placement (actor placement) and scheduler (durable timers and
  # reminders). Both come from the very dapr module daprd is built from, with that
  # module's own go.mod, so the three always speak the same protocol version.
  local stampfile=$OUT/.dapr/bin/engine.stamp stamp name missing=0
  stamp="$dapr_version $(declare -f build_engine fetch_dapr_module | sha256sum | cut -c1-16) $(go env GOVERSION)"
  for name in placement scheduler; do [ -x "$OUT/.dapr/bin/$name" ] || missing=1; done
  if [ "$missing" = 0 ] && [ "$(cat "$stampfile" 2>/dev/null)" = "$stamp" ]; then
    echo "placement, scheduler $dapr_version: up to date ($OUT/.dapr/bin)"
    return
  fi
  echo "placement, scheduler $dapr_version: building from Go modules (about a minute with a warm module cache)..."
  local moddir work=$OUT/build-engine
  moddir=$(fetch_dapr_module)
  # The module cache is read-only and go may touch go.sum: build in a private copy.
  rm -rf "$work" && mkdir -p "$work" "$OUT/.dapr/bin"
  cp -r "$moddir" "$work/dapr" && chmod -R u+w "$work/dapr"
  # Upstream's healthz server binds every interface (both services ignore
  # --healthz-listen-address): in the private copy it binds 127.0.0.1.
  local healthz=$work/dapr/pkg/healthz/server/server.go
  grep -q 'fmt.Sprintf(":%d", s.port)' "$healthz" || die "$healthz changed upstream: check how its listen address is set"
  sed -i 's|fmt.Sprintf(":%d", s.port)|fmt.Sprintf("127.0.0.1:%d", s.port)|' "$healthz"
  for name in placement scheduler; do
    (cd "$work/dapr" && go build -trimpath -ldflags "-s -w" -o "$OUT/.dapr/bin/$name.tmp" "./cmd/$name") \
      || die "building $name failed (see the Go errors above). If a module could not be fetched, check the network and GOPROXY."
    mv "$OUT/.dapr/bin/$name.tmp" "$OUT/.dapr/bin/$name"
  done
  rm -rf "$work"
  echo "$stamp" > "$stampfile"
  echo "placement, scheduler $dapr_version: built in $OUT/.dapr/bin ($(du -ch "$OUT/.dapr/bin/placement" "$OUT/.dapr/bin/scheduler" | tail -1 | cut -f1))"
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

case "${1:-all}" in
  daprd) build_daprd ;;
  cli) build_cli ;;
  engine) build_engine ;;
  kustomize) build_kustomize ;;
  temporal) build_temporal ;;
  all) build_daprd; build_cli; build_engine; build_kustomize ;;
  *) die "usage: runtime/build.sh [daprd|cli|engine|kustomize|temporal|all]" ;;
esac
