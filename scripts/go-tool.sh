#!/bin/bash
# csi-sanity, the Kubernetes CSI project's conformance suite (github.com/kubernetes-csi/csi-test,
# cmd/csi-sanity), at a pinned version, for test/csi-sanity.test.ts:
#   scripts/csi-sanity.sh build    go install it from the Go module proxy into the cache, once;
#                                  print the binary's path
#   scripts/csi-sanity.sh built    print the binary's path if it is built, else fail
# The binary is CACHE/bin/csi-sanity-VERSION; its modules go to CACHE/gomod and its compiled
# packages to CACHE/gocache-tools. Nothing is downloaded at test time. It needs a Go from 1.25 on
# as `go` (csi-test's go.mod says go 1.25.0; the machine's go1.26 will do).
set -euo pipefail
CACHE=${DAPIFS_CACHE:-$HOME/.cache/dapifs}
VERSION=v5.6.0
BIN=$CACHE/bin/csi-sanity-$VERSION

case ${1:-} in
  built) [ -x "$BIN" ] && echo "$BIN" ;;
  build)
    if [ ! -x "$BIN" ]; then
      GO=${DAPIFS_GO_MODULES:-go}
      case $("$GO" env GOVERSION 2>/dev/null) in
        go1.2[5-9]*|go1.[3-9][0-9]*) ;;
        *) echo "$0: csi-sanity $VERSION needs Go 1.25 or later as '$GO' (or DAPIFS_GO_MODULES); it is: $("$GO" version 2>&1)" >&2; exit 1 ;;
      esac
      mkdir -p "$CACHE/bin" "$CACHE/tmp"
      tmp=$(mktemp -d "$CACHE/tmp/csi-sanity.XXXXXX")
      trap 'rm -rf "$tmp"' EXIT
      GOBIN=$tmp GOMODCACHE=$CACHE/gomod GOCACHE=$CACHE/gocache-tools GOFLAGS="-trimpath -buildvcs=false" CGO_ENABLED=0 \
        "$GO" install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$VERSION" >&2
      mv "$tmp/csi-sanity" "$BIN"
    fi
    echo "$BIN"
    ;;
  *) echo "usage: $0 build|built" >&2; exit 2 ;;
esac
