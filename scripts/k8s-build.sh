#!/bin/bash
# Builds the server programs of one Kubernetes release (kubelet, kube-apiserver, kube-scheduler,
# kube-controller-manager), or kubectl, into the cache, unmodified and version-stamped
# (`kubelet --version` says the release), once; prints the binaries' paths (CACHE/bin/PROGRAM-RELEASE).
#   scripts/k8s-build.sh RELEASE [PROGRAM...]          build them (the four servers by default)
#   scripts/k8s-build.sh --check RELEASE [PROGRAM...]  print the paths iff all are built, else fail
# Releases, and where each comes from:
#   1.20.2  Debian bookworm's source package (scripts/k8s-source.sh: the only tree with vendor/ its
#           registries serve), built in GOPATH mode as Kubernetes 1.20 builds itself, with Debian's
#           Go 1.19 (/usr/lib/go-1.19/bin/go, or DAPIFS_GO_1_20) and -tags dockerless.
#   other   Kubernetes' Go modules from the Go module proxy: scripts/k8s-modules/RELEASE/go.mod
#           requires k8s.io/kubernetes at vRELEASE and each staging module (k8s.io/api, ...) at
#           the matching v0.MINOR.PATCH; its go.sum pins every byte. It is built with the Go of
#           its toolchain line (GOTOOLCHAIN), with the flags of Kubernetes' own release build
#           (hack/lib/golang.sh: CGO_ENABLED=0, -trimpath, -tags selinux,notest,grpcnotrace, -s -w).
#           Modules go to CACHE/gomod, compiled packages to CACHE/gocache-RELEASE. kubectl has a
#           module of its own, scripts/k8s-modules/RELEASE/kubectl/go.mod, so that it changes
#           nothing the servers are stamped with; it resolves to the same versions.
# A binary is rebuilt only when what built it changes: its stamp (BINARY.tags) records the tags,
# the Go and, for a module build, the hash of go.mod and go.sum.
# To add a release: copy scripts/k8s-modules/<newest>/go.mod to a new folder, change the versions
# (and the toolchain line to the Go of the release's .go-version), then `go mod tidy` there with
# GOMODCACHE and GOTOOLCHAIN set as below.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${DAPIFS_CACHE:-$HOME/.cache/dapifs}
CHECK=
if [ "${1:-}" = --check ]; then CHECK=1; shift; fi
RELEASE=${1:-}
[[ $RELEASE =~ ^1\.[0-9]+\.[0-9]+$ ]] || { echo "usage: $0 [--check] RELEASE [PROGRAM...]: RELEASE is e.g. 1.20.2 or 1.37.2, not '$RELEASE'" >&2; exit 2; }
shift
PROGRAMS=("$@")
[ ${#PROGRAMS[@]} -gt 0 ] || PROGRAMS=(kubelet kube-apiserver kube-scheduler kube-controller-manager)
for p in "${PROGRAMS[@]}"; do
  case $p in kubelet|kube-apiserver|kube-scheduler|kube-controller-manager) ;;
    kubectl) ;;
    *) echo "$0: unknown program '$p': kubelet, kube-apiserver, kube-scheduler, kube-controller-manager or kubectl" >&2; exit 2 ;;
  esac
done
MAJOR=${RELEASE%%.*} MINOR=${RELEASE#*.} && MINOR=${MINOR%%.*}

if [ "$RELEASE" = 1.20.2 ]; then
  GO=${DAPIFS_GO_1_20:-/usr/lib/go-1.19/bin/go}
  # -tags dockerless leaves out dockershim and cAdvisor's Docker support, which waits 5 s at
  # start-up for a Docker that isn't there; nothing else changes.
  TAGS=dockerless
  STAMP="$TAGS $("$GO" version 2>/dev/null || echo "no $GO")"
else
  MOD=$HERE/k8s-modules/$RELEASE
  [ -f "$MOD/go.mod" ] || { echo "$0: no module for Kubernetes $RELEASE: scripts/k8s-modules/$RELEASE/go.mod (see this script's header)" >&2; exit 2; }
  # Any Go from 1.21 on runs the toolchain that GOTOOLCHAIN names (the machine's own if it is
  # that one, else the go command fetches it from the module proxy).
  GO=${DAPIFS_GO_MODULES:-go}
  case $("$GO" env GOVERSION 2>/dev/null) in
    go1.2[1-9]*|go1.[3-9][0-9]*) ;;
    *) echo "$0: building Kubernetes $RELEASE needs Go 1.21 or later as '$GO' (or DAPIFS_GO_MODULES); it is: $("$GO" version 2>&1)" >&2; exit 1 ;;
  esac
  GOTOOLCHAIN=$(sed -n 's/^toolchain //p' "$MOD/go.mod")
  [ -n "$GOTOOLCHAIN" ] || { echo "$0: $MOD/go.mod has no toolchain line" >&2; exit 2; }
  export GOTOOLCHAIN
  TAGS=selinux,notest,grpcnotrace
  for p in "${PROGRAMS[@]}"; do
    [ "$p" != kubectl ] || [ -f "$MOD/kubectl/go.mod" ] || { echo "$0: no module for kubectl $RELEASE: $MOD/kubectl/go.mod" >&2; exit 2; }
  done
fi

# The module a program is built in (none for 1.20.2), and what its binary is stamped with.
mod_of() { if [ -z "${MOD:-}" ]; then echo; elif [ "$1" = kubectl ]; then echo "$MOD/kubectl"; else echo "$MOD"; fi; }
stamp_of() {
  if [ -z "${MOD:-}" ]; then echo "$STAMP"; return; fi
  local m; m=$(mod_of "$1")
  echo "$TAGS $(cd "$m" && "$GO" version 2>/dev/null || echo "no $GOTOOLCHAIN") $(cat "$m/go.mod" "$m/go.sum" | sha256sum | cut -c1-16)"
}

bin() { echo "$CACHE/bin/$1-$RELEASE"; }
built() { [ -x "$(bin "$1")" ] && [ "$(cat "$(bin "$1").tags" 2>/dev/null)" = "$(stamp_of "$1")" ]; }

print_all() { for p in "${PROGRAMS[@]}"; do bin "$p"; done; }

TODO=()
for p in "${PROGRAMS[@]}"; do built "$p" || TODO+=("$p"); done
if [ -n "$CHECK" ]; then
  [ ${#TODO[@]} -eq 0 ] || exit 1
  print_all; exit 0
fi
if [ ${#TODO[@]} -eq 0 ]; then print_all; exit 0; fi

mkdir -p "$CACHE/bin" "$CACHE/tmp"
export CGO_ENABLED=0 TMPDIR=$CACHE/tmp
OUT=$(mktemp -d "$CACHE/tmp/k8s-build-$RELEASE.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
t0=$(date +%s)
if [ "$RELEASE" = 1.20.2 ]; then
  tree=$("$HERE/k8s-source.sh")
  gopath=$CACHE/gopath
  mkdir -p "$gopath/src/k8s.io"
  ln -sfn "$tree" "$gopath/src/k8s.io/kubernetes"
  export GOPATH=$gopath GO111MODULE=off GOFLAGS= GOPROXY=off GOCACHE=$CACHE/gocache
  # The tarball lacks the generated OpenAPI definitions.
  [ -f "$tree/pkg/generated/openapi/zz_generated.openapi.go" ] || (cd "$tree" && make gen_openapi >&2)
  # In GOPATH mode the staging packages live under k8s.io/kubernetes/vendor/.
  ld="-s -w"
  for v in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    ld="$ld -X $v.gitVersion=v$RELEASE -X $v.gitMajor=$MAJOR -X $v.gitMinor=$MINOR -X $v.gitTreeState=clean"
  done
  pkgs=(); for p in "${TODO[@]}"; do pkgs+=("./cmd/$p"); done
  (cd "$gopath/src/k8s.io/kubernetes" && "$GO" build -tags "$TAGS" -ldflags "$ld" -o "$OUT/" "${pkgs[@]}" >&2)
else
  export GOMODCACHE=$CACHE/gomod GOCACHE=$CACHE/gocache-$RELEASE GOFLAGS="-mod=readonly -trimpath -buildvcs=false"
  ld="-s -w"
  for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $v.gitVersion=v$RELEASE -X $v.gitMajor=$MAJOR -X $v.gitMinor=$MINOR -X $v.gitTreeState=clean"
  done
  # One go build per module: the servers together, kubectl in its own.
  for m in "$MOD" "$MOD/kubectl"; do
    pkgs=(); for p in "${TODO[@]}"; do [ "$(mod_of "$p")" != "$m" ] || pkgs+=("k8s.io/kubernetes/cmd/$p"); done
    [ ${#pkgs[@]} -eq 0 ] || (cd "$m" && "$GO" build -tags "$TAGS" -ldflags "$ld" -o "$OUT/" "${pkgs[@]}" >&2)
  done
fi
for p in "${TODO[@]}"; do
  mv "$OUT/$p" "$(bin "$p")"
  stamp_of "$p" > "$(bin "$p").tags"
done
echo "built Kubernetes $RELEASE ${TODO[*]} in $(( $(date +%s) - t0 )) s" >&2
print_all
