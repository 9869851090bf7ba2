#!/bin/bash
# The dapifs image, built here from the very Dockerfile that users build with `docker build`, with
# no Docker engine and no registry: buildah (Debian's) runs the Dockerfile, and the two images it
# starts FROM are made here, from Debian's packages, instead of pulled.
#   scripts/image.sh build TAG   build localhost/dapifs:TAG (once: see the stamp below) and write it
#                                as a docker-archive tarball, which `ctr images import` loads into a
#                                node's containerd; print the tarball's path
#   scripts/image.sh built TAG   print that path iff it is built from the current sources
#   scripts/image.sh size TAG    print the image's size (its layers, uncompressed), in MB
#
# The Dockerfile's bases are build arguments (NODE_IMAGE, RUNTIME_IMAGE), by default Docker Hub's
# node:20-bookworm-slim and debian:bookworm-slim. Here they are:
#   localhost/dapifs-base/debian:bookworm-slim  Debian bookworm's minbase (mmdebstrap), without
#       documentation, manual pages and translations, as Docker's debian:bookworm-slim is made;
#   localhost/dapifs-base/node:20-bookworm-slim that, plus this machine's Node 20 (its /usr/bin/node,
#       npm and Node's headers: the nodejs package, from NodeSource, that the machine comes with),
#       laid out as the official node image lays it out (/usr/local/bin/node,
#       /usr/local/lib/node_modules/npm, /usr/local/include/node), and the machine's certificate
#       authorities (/etc/ssl/certs/ca-certificates.crt, as NODE_EXTRA_CA_CERTS), which npm ci in
#       the build needs to reach the registry the way the host reaches it. Only the build stage
#       starts from it: nothing of it but the node binary reaches the image.
# Each TAG's image is labelled org.opencontainers.image.version=TAG, so that two tags are two images.
#
# Caching, like scripts/k8s-build.sh's: buildah's store is CACHE/containers (its layer cache, --layers,
# keeps every step whose inputs did not change); the bases are made again only when their recipe or
# the machine's Node changes (CACHE/images/base.stamp); and a tag is built again only when its
# stamp changes: the hash of the Dockerfile, .dockerignore and everything the Dockerfile copies
# (package.json, package-lock.json, tsconfig.json, types/, lib/ but its build output), and the bases'.
# Needs (scripts/setup.sh installs them): buildah, mmdebstrap, and root. The build's RUN steps use
# the host's network (apt-get from Debian's mirrors, npm ci from the npm registry).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CACHE=${DAPIFS_CACHE:-$HOME/.cache/dapifs}
IMAGES=$CACHE/images
REPO=localhost/dapifs
BASE_DEBIAN=localhost/dapifs-base/debian:bookworm-slim
BASE_NODE=localhost/dapifs-base/node:20-bookworm-slim
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# buildah's store in the cache; its run state (mounts, locks) in /run, one per store, gone at a reboot.
RUNROOT=/run/dapifs-containers/$(echo "$CACHE" | sha256sum | cut -c1-12)
bh() { buildah --root "$CACHE/containers/storage" --runroot "$RUNROOT" --storage-driver overlay "$@"; }

# Made as Docker's debian images are: what their slim variants leave out (their
# /etc/dpkg/dpkg.cfg.d/docker), and apt's caches and downloaded packages removed after each run
# (their /etc/apt/apt.conf.d/docker-clean); mmdebstrap leaves both settings in the image, so the
# Dockerfile's apt-get installs obey them too. /usr is merged by mmdebstrap's hook, not by the
# usrmerge package (which would bring Perl).
DEBIAN_OPTS=(
  --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/groff/*'
  --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/lintian/*'
  --dpkgopt='path-exclude=/usr/share/linda/*' --dpkgopt='path-exclude=/usr/share/locale/*'
  --aptopt='DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; }'
  --aptopt='APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; }'
  --aptopt='Dir::Cache::pkgcache ""' --aptopt='Dir::Cache::srcpkgcache ""'
)

node_prefix() { local n; n=$(readlink -f "$(command -v node)"); dirname "$(dirname "$n")"; }

base_stamp() {
  local p; p=$(node_prefix)
  { echo "${DEBIAN_OPTS[*]}"; sed -n '/^make_bases()/,/^}/p' "$0"; "$p/bin/node" --version
    cat "$p/lib/node_modules/npm/package.json" /etc/ssl/certs/ca-certificates.crt | sha256sum; } | sha256sum | cut -c1-16
}

make_bases() {
  local w c m p t0
  t0=$(date +%s)
  w=$(mktemp -d "$CACHE/tmp/image-base.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$w'" RETURN
  mmdebstrap --quiet "${DEBIAN_OPTS[@]}" bookworm "$w/rootfs.tar" >&2
  c=$(bh from scratch)
  m=$(bh mount "$c")
  tar -C "$m" -xf "$w/rootfs.tar"
  bh umount "$c" > /dev/null
  bh config --env "$PATH_ENV" --cmd '["bash"]' "$c"
  bh commit --quiet --rm "$c" "$BASE_DEBIAN" > /dev/null
  p=$(node_prefix)
  c=$(bh from --pull=never "$BASE_DEBIAN")
  m=$(bh mount "$c")
  mkdir -p "$m/usr/local/bin" "$m/usr/local/include" "$m/usr/local/lib/node_modules"
  cp -a "$(readlink -f "$p/bin/node")" "$m/usr/local/bin/node"
  cp -a "$p/include/node" "$m/usr/local/include/node"
  cp -a "$p/lib/node_modules/npm" "$m/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$m/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$m/usr/local/bin/npx"
  mkdir -p "$m/usr/local/share/ca-certificates"
  cp /etc/ssl/certs/ca-certificates.crt "$m/usr/local/share/ca-certificates/machine.crt"
  bh umount "$c" > /dev/null
  bh config --env "$PATH_ENV" --env "NODE_VERSION=$("$p/bin/node" --version | tr -d v)" \
    --env NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/machine.crt --env NPM_CONFIG_UPDATE_NOTIFIER=false --cmd '["node"]' "$c"
  bh commit --quiet --rm "$c" "$BASE_NODE" > /dev/null
  echo "made the base images in $(( $(date +%s) - t0 )) s" >&2
}

bases() {
  local s; s=$(base_stamp)
  if [ "$(cat "$IMAGES/base.stamp" 2>/dev/null)" = "$s" ] && bh inspect --type image "$BASE_DEBIAN" > /dev/null 2>&1 &&
     bh inspect --type image "$BASE_NODE" > /dev/null 2>&1; then return; fi
  make_bases
  echo "$s" > "$IMAGES/base.stamp"
}

# The hash of what the Dockerfile reads from the build context (its COPY lines), and the bases'.
stamp() {
  (cd "$ROOT" && find Dockerfile .dockerignore package.json package-lock.json tsconfig.json types lib scripts/bundle.mjs \
      -path lib/native/build -prune -o -type f -print | LC_ALL=C sort | xargs sha256sum
    cat "$IMAGES/base.stamp"; echo "$1") | sha256sum | cut -c1-16
}

tarball() { echo "$IMAGES/dapifs-$1.tar"; }

built() {
  [ -f "$(tarball "$1")" ] && [ "$(cat "$IMAGES/base.stamp" 2>/dev/null)" = "$(base_stamp)" ] &&
    [ "$(cat "$(tarball "$1").stamp" 2>/dev/null)" = "$(stamp "$1")" ]
}

build() {
  local tag=$1 out t0 s
  out=$(tarball "$tag")
  mkdir -p "$IMAGES" "$CACHE/tmp"
  bases
  s=$(stamp "$tag")
  if [ -f "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$s" ]; then echo "$out"; return; fi
  t0=$(date +%s)
  bh bud --quiet --layers --pull=never --network host \
    --build-arg "NODE_IMAGE=$BASE_NODE" --build-arg "RUNTIME_IMAGE=$BASE_DEBIAN" \
    --label "org.opencontainers.image.version=$tag" \
    -t "$REPO:$tag" -f "$ROOT/Dockerfile" "$ROOT" > /dev/null
  rm -f "$out.tmp"
  bh push --quiet "$REPO:$tag" "docker-archive:$out.tmp:$REPO:$tag" > /dev/null
  mv "$out.tmp" "$out"
  echo "$s" > "$out.stamp"
  echo "built $REPO:$tag in $(( $(date +%s) - t0 )) s: $(size "$tag") MB" >&2
  echo "$out"
}

size() {
  # The docker-archive holds the layers uncompressed: their sum is what a node unpacks.
  tar -tvf "$(tarball "$1")" | awk '$6 !~ /json$/ && $6 != "manifest.json" { s += $3 } END { printf "%.0f\n", s / 1e6 }'
}

[ "$(id -u)" -eq 0 ] || { echo "$0 needs root (buildah's store, mmdebstrap)" >&2; exit 1; }
case "${1:-}" in
  build) build "${2:?TAG}" ;;
  built) built "${2:?TAG}" && tarball "$2" ;;
  size) size "${2:?TAG}" ;;
  *) echo "usage: $0 build TAG | built TAG | size TAG" >&2; exit 2 ;;
esac
