#!/bin/bash
# The Go programs the ecosystem tests with, each at a pinned version, installed with `go install`
# from the Go module proxy into the cache, once (by .ci/run); nothing is downloaded at test time.
#   scripts/go-tool.sh TOOL build    install it if it is not there; print the binary's path
#   scripts/go-tool.sh TOOL built    print the binary's path if it is installed, else fail
# TOOL is
#   csi-sanity   the Kubernetes CSI project's conformance suite (test/csi-sanity.test.ts)
#   helm         Helm, for the chart's lint, template and install (test/chart.test.ts)
# The binary is CACHE/bin/TOOL-VERSION; the modules go to CACHE/gomod and the compiled packages to
# CACHE/gocache-tools. Both need a Go from 1.25 on as `go` (their go.mod files say so; the
# machine's go1.26 will do), or DAPIFS_GO_MODULES.
set -euo pipefail
CACHE=${DAPIFS_CACHE:-$HOME/.cache/dapifs}
TOOL=${1:-}
case $TOOL in
  csi-sanity) VERSION=v5.6.0; PKG=github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity ;;
  helm) VERSION=v4.3.2; PKG=helm.sh/helm/v4/cmd/helm ;;
  *) echo "usage: $0 csi-sanity|helm build|built" >&2; exit 2 ;;
esac
BIN=$CACHE/bin/$TOOL-$VERSION

case ${2:-} in
  built) [ -x "$BIN" ] && echo "$BIN" ;;
  build)
    if [ ! -x "$BIN" ]; then
      GO=${DAPIFS_GO_MODULES:-go}
      case $("$GO" env GOVERSION 2>/dev/null) in
        go1.2[5-9]*|go1.[3-9][0-9]*) ;;
        *) echo "$0: $TOOL $VERSION needs Go 1.25 or later as '$GO' (or DAPIFS_GO_MODULES); it is: $("$GO" version 2>&1)" >&2; exit 1 ;;
      esac
      mkdir -p "$CACHE/bin" "$CACHE/tmp"
      tmp=$(mktemp -d "$CACHE/tmp/$TOOL.XXXXXX")
      trap 'rm -rf "$tmp"' EXIT
      GOBIN=$tmp GOMODCACHE=$CACHE/gomod GOCACHE=$CACHE/gocache-tools GOFLAGS="-trimpath -buildvcs=false" CGO_ENABLED=0 \
        "$GO" install "$PKG@$VERSION" >&2
      mv "$tmp/$TOOL" "$BIN"
    fi
    echo "$BIN"
    ;;
  *) echo "usage: $0 $TOOL build|built" >&2; exit 2 ;;
esac
