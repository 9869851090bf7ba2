#!/bin/bash
# Installs what dapifs needs on Debian (12 or later) with Node.js 20: libfuse3-dev and pkg-config
# (npm's postinstall builds the native layer, fuse-native's addon ported to libfuse 3, from its
# source with python3, make and g++: lib/native/), fuse3 (fusermount, which unmounting calls), libfuse2 (for
# fuse-native's prebuilt addon, a fallback and the benchmark's old floor), then the npm packages. For the tests: inotify-tools and gcc; Go (the kubelet-diff harness and the real
# kube-apiserver the tests run), etcd, rsync (its build), openssl and curl (its start-up); containerd,
# runc, busybox-static and jq (the real node of scripts/kube-node.sh). Debian's Go 1.19 builds
# Kubernetes 1.20.2; newer releases (scripts/k8s-build.sh) need a Go from 1.21 on as `go` (the
# machine's go1.26.8), which runs the toolchain their go.mod names. Bookworm's containerd 1.6 serves
# both releases' kubelets (CRI v1alpha2 and v1), so no newer suite's containerd is needed. buildah
# and mmdebstrap build the image from the Dockerfile without a Docker engine (scripts/image.sh):
# bookworm's buildah 1.28 does, so no newer suite's is needed either.
# Run as root, or as a user who can sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq libfuse3-dev pkg-config libfuse2 fuse3 python3 make g++ inotify-tools gcc golang-go etcd-server etcd-client rsync openssl curl ca-certificates containerd runc busybox-static jq buildah mmdebstrap >/dev/null
npm ci --no-audit --no-fund
node lib/native/build.mjs --strict # fails here if the postinstall could not build it
