#!/bin/bash
# Installs what dapifs needs on Debian (12 or later) with Node.js 20: libfuse2 (the library
# fuse-native's addon links), fuse3 (fusermount, which unmounting calls), inotify-tools and a C
# compiler (tests and the benchmark), Go (to build the kubelet-diff harness the tests compare
# against), then the npm packages. Run as root, or as a user who can sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq libfuse2 fuse3 inotify-tools gcc golang-go ca-certificates >/dev/null
npm ci --no-audit --no-fund
