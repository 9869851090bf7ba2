#!/bin/bash
# Fetches the Kubernetes 1.20.2 source tree (with vendor/) from Debian's `kubernetes` source
# package into a cache outside the repository, once. Prints the tree's path.
#   scripts/k8s-source.sh            -> e.g. /root/.cache/dapifs/k8s/kubernetes-1.20.2
# Debian bookworm's source package is the only Kubernetes tree with vendor/ that its
# registries serve; newer ones (trixie, sid) are stripped to kubectl.
set -euo pipefail
CACHE=${DAPIFS_CACHE:-$HOME/.cache/dapifs}/k8s
VERSION=1.20.5+really1.20.2-1.1+deb12u1
TREE=$CACHE/kubernetes-1.20.2
if [ -f "$TREE/.dapifs-ready" ]; then echo "$TREE"; exit 0; fi
mkdir -p "$CACHE/apt/lists/partial" "$CACHE/apt/cache/archives/partial" "$CACHE/debsrc"
echo 'deb-src http://deb.debian.org/debian bookworm main' > "$CACHE/apt/sources.list"
A=(-o "Dir::Etc::SourceList=$CACHE/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
   -o "Dir::State::Lists=$CACHE/apt/lists" -o "Dir::Cache=$CACHE/apt/cache")
apt-get "${A[@]}" update >&2
(cd "$CACHE/debsrc" && apt-get "${A[@]}" source --download-only "kubernetes=$VERSION" >&2)
rm -rf "$TREE.tmp" && mkdir -p "$TREE.tmp"
tar xzf "$CACHE"/debsrc/kubernetes_1.20.5+really1.20.2.orig.tar.gz -C "$TREE.tmp"
rm -rf "$TREE" && mv "$TREE.tmp/kubernetes-1.20.2" "$TREE" && rmdir "$TREE.tmp"
# The vendored reflect2 1.0.1 crashes on Go >= 1.18; Debian's 1.0.2 is a drop-in.
D=$CACHE/reflect2 && rm -rf "$D" && mkdir -p "$D"
(cd "$D" && apt-get download golang-github-modern-go-reflect2-dev >&2 && dpkg-deb -x golang-github-modern-go-reflect2-dev_*.deb x)
rm -rf "$TREE/vendor/github.com/modern-go/reflect2"
cp -r "$D/x/usr/share/gocode/src/github.com/modern-go/reflect2" "$TREE/vendor/github.com/modern-go/reflect2"
rm -f "$TREE"/vendor/github.com/modern-go/reflect2/*_test.go
touch "$TREE/.dapifs-ready"
echo "$TREE"
