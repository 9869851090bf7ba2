#!/bin/bash
# Builds the kubelet-diff harness (main.go with release_<RELEASE>.go) against one Kubernetes
# release, into the cache, once; prints the binary's path.
#   scripts/kubelet-diff/build.sh [RELEASE]     1.20.2 (the default) or 1.37.2
# Each release is built with the Go that builds its kubelet here, which decides %q's Unicode tables:
#   1.20.2  Debian's source tree (scripts/k8s-source.sh) in GOPATH mode, with Debian's Go 1.19
#           (/usr/lib/go-1.19/bin/go, or DAPIFS_GO_1_20; apt-get install golang-go on bookworm).
#   1.37.2  the Go modules of scripts/k8s-modules/1.37.2 (go.mod and go.sum, as scripts/k8s-build.sh
#           builds the release), with the toolchain its go.mod names, reusing that build's module
#           cache (CACHE/gomod) and build cache (CACHE/gocache-1.37.2): nothing is downloaded that
#           the release's own build did not already fetch.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RELEASE=${1:-1.20.2}
CACHE=${DAPIFS_CACHE:-$HOME/.cache/dapifs}
BIN=$CACHE/bin/kubelet-diff-$RELEASE
SRC=("$HERE/main.go" "$HERE/release_${RELEASE%.*}.go")
[ -f "${SRC[1]}" ] || { echo "$0: no harness for Kubernetes $RELEASE (${SRC[1]}): 1.20.2 or 1.37.2" >&2; exit 2; }
mkdir -p "$CACHE/bin" "$CACHE/tmp"
if [ "$RELEASE" = 1.20.2 ]; then
  GO=${DAPIFS_GO_1_20:-/usr/lib/go-1.19/bin/go}
  SUM=$( (cat "${SRC[@]}"; "$GO" version) | sha256sum | cut -c1-16)
  if [ -x "$BIN" ] && [ "$(cat "$BIN.sum" 2>/dev/null)" = "$SUM" ]; then echo "$BIN"; exit 0; fi
  TREE=$("$HERE/../k8s-source.sh")
  GOPATH=$CACHE/gopath
  mkdir -p "$GOPATH/src/k8s.io"
  ln -sfn "$TREE" "$GOPATH/src/k8s.io/kubernetes"
  rm -rf "$TREE/cmd/dapifs-kubelet-diff-$RELEASE" && mkdir -p "$TREE/cmd/dapifs-kubelet-diff-$RELEASE" && cp "${SRC[@]}" "$TREE/cmd/dapifs-kubelet-diff-$RELEASE/"
  cd "$GOPATH/src/k8s.io/kubernetes"
  GOPATH=$GOPATH GO111MODULE=off GOFLAGS= GOPROXY=off CGO_ENABLED=0 GOCACHE=$CACHE/gocache TMPDIR=$CACHE/tmp \
    "$GO" build -o "$BIN.new" ./cmd/dapifs-kubelet-diff-$RELEASE >&2
else
  MOD=$HERE/../k8s-modules/$RELEASE
  [ -f "$MOD/go.mod" ] || { echo "$0: no module for Kubernetes $RELEASE: $MOD/go.mod" >&2; exit 2; }
  GO=${DAPIFS_GO_MODULES:-go}
  export GOTOOLCHAIN=$(sed -n 's/^toolchain //p' "$MOD/go.mod")
  SUM=$( (cat "${SRC[@]}" "$MOD/go.mod" "$MOD/go.sum"; cd "$MOD" && "$GO" version) | sha256sum | cut -c1-16)
  if [ -x "$BIN" ] && [ "$(cat "$BIN.sum" 2>/dev/null)" = "$SUM" ]; then echo "$BIN"; exit 0; fi
  # A copy of the release's module with the harness as one of its packages: the same requirements
  # and sums, so the same module versions as the release's own build.
  DIR=$CACHE/tmp/kubelet-diff-$RELEASE
  rm -rf "$DIR" && mkdir -p "$DIR/kubelet-diff"
  cp "$MOD/go.mod" "$MOD/go.sum" "$DIR/" && cp "${SRC[@]}" "$DIR/kubelet-diff/"
  cd "$DIR"
  GOMODCACHE=$CACHE/gomod GOCACHE=$CACHE/gocache-$RELEASE GOFLAGS="-mod=readonly -trimpath -buildvcs=false" GOPROXY=off \
    CGO_ENABLED=0 TMPDIR=$CACHE/tmp "$GO" build -tags selinux,notest,grpcnotrace -o "$BIN.new" ./kubelet-diff >&2
fi
mv "$BIN.new" "$BIN"
echo "$SUM" > "$BIN.sum"
echo "$BIN"
