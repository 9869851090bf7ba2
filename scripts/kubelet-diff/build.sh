#!/bin/bash
# Builds the kubelet-diff harness against the Kubernetes 1.20.2 tree (scripts/k8s-source.sh)
# with Debian's Go 1.19 (the Go its kubelet is built with: it decides %q's Unicode tables), into the
# cache. Prints the binary's path. Needs: apt-get install golang-go (bookworm's is 1.19).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TREE=$("$HERE/../k8s-source.sh")
CACHE=${DAPIFS_CACHE:-$HOME/.cache/dapifs}
BIN=$CACHE/bin/kubelet-diff
GO=${DAPIFS_GO_1_20:-/usr/lib/go-1.19/bin/go}
SUM=$( (sha256sum "$HERE/main.go"; "$GO" version) | sha256sum | cut -c1-16)
if [ -x "$BIN" ] && [ "$(cat "$BIN.sum" 2>/dev/null)" = "$SUM" ]; then echo "$BIN"; exit 0; fi
GOPATH=$CACHE/gopath
mkdir -p "$GOPATH/src/k8s.io" "$CACHE/bin" "$CACHE/tmp"
ln -sfn "$TREE" "$GOPATH/src/k8s.io/kubernetes"
rm -rf "$GOPATH/src/k8s.io/kubernetes/cmd/dapifs-kubelet-diff"
mkdir -p "$TREE/cmd/dapifs-kubelet-diff" && cp "$HERE/main.go" "$TREE/cmd/dapifs-kubelet-diff/"
cd "$GOPATH/src/k8s.io/kubernetes"
GOPATH=$GOPATH GO111MODULE=off GOFLAGS= GOPROXY=off CGO_ENABLED=0 GOCACHE=$CACHE/gocache TMPDIR=$CACHE/tmp \
  "$GO" build -o "$BIN" ./cmd/dapifs-kubelet-diff >&2
echo "$SUM" > "$BIN.sum"
echo "$BIN"
