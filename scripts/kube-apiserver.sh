#!/bin/bash
# A real kube-apiserver (1.20.2 by default, from Debian's `kubernetes` source package; or another
# release that scripts/k8s-build.sh builds) and etcd (Debian's), on 127.0.0.1 only, for the tests
# and by hand:
#   scripts/kube-apiserver.sh build          build once into the cache; print the binary's path
#   scripts/kube-apiserver.sh built          print the binary's path if it is built, else fail
#   scripts/kube-apiserver.sh up DIR         start etcd and the API server with state in DIR;
#                                            write DIR/kubeconfig; return when ready
#   scripts/kube-apiserver.sh down DIR       stop both
#   scripts/kube-apiserver.sh stop-api DIR   stop the API server only (etcd keeps the data)
#   scripts/kube-apiserver.sh start-api DIR  start it again, as up started it
# Ports: DAPIFS_ETCD_PORT (23790; peer +10) and DAPIFS_API_PORT (26443).
# DAPIFS_K8S: the release (1.20.2). DAPIFS_API_NODE=1: the API server of a node (kube-node.sh),
# as in a cluster: privileged pods allowed, and the ServiceAccount admission plugin on, so pods get
# their ServiceAccount's token (a projected volume; on 1.20.2 the BoundServiceAccountTokenVolume
# gate turns that on), which a controller manager must serve (the namespaces' `default` accounts,
# the kube-root-ca.crt ConfigMaps). Without it there is no controller manager, so that plugin is
# off. DIR/sa.key signs the tokens and DIR/sa.pub checks them; a controller manager signs with
# DIR/sa.key too. A node's Service range is 127.0.0.0/24: the `kubernetes` Service's ClusterIP is
# then 127.0.0.1, the API server's own address, which a hostNetwork pod reaches without a kube-proxy
# (if the API server's port is the Service's, 443).
# Needs: golang-go etcd-server etcd-client rsync openssl curl (scripts/setup.sh installs them).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${DAPIFS_CACHE:-$HOME/.cache/dapifs}
RELEASE=${DAPIFS_K8S:-1.20.2}
ETCD_PORT=${DAPIFS_ETCD_PORT:-23790}
API_PORT=${DAPIFS_API_PORT:-26443}

build() { "$HERE/k8s-build.sh" "$RELEASE" kube-apiserver; }

wait_for() { # URL SECONDS [curl args]
  local url=$1 n=$(( $2 * 10 )); shift 2
  until curl -fsS -o /dev/null "$@" "$url" 2>/dev/null; do
    n=$((n - 1)); [ $n -gt 0 ] || { echo "timed out waiting for $url" >&2; return 1; }
    sleep 0.1
  done
}

start_api() {
  local dir=$1 node= release=$RELEASE bin flags
  # start-api starts the server that up started.
  # shellcheck disable=SC1091
  if [ -f "$dir/api.env" ]; then . "$dir/api.env"; else node=${DAPIFS_API_NODE:-}; fi
  bin=$CACHE/bin/kube-apiserver-$release
  if [ "$node" = 1 ]; then
    flags=(--allow-privileged=true --service-cluster-ip-range=127.0.0.0/24)
    [ "$release" != 1.20.2 ] || flags+=(--feature-gates=BoundServiceAccountTokenVolume=true)
  else
    flags=(--disable-admission-plugins=ServiceAccount --service-cluster-ip-range=10.0.0.0/24)
  fi
  "$bin" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
    --endpoint-reconciler-type=none --cert-dir="$dir/certs" --token-auth-file="$dir/tokens.csv" \
    --authorization-mode=AlwaysAllow --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$dir/sa.pub" --service-account-signing-key-file="$dir/sa.key" \
    "${flags[@]}" \
    --profiling=false --v=1 >>"$dir/apiserver.log" 2>&1 &
  echo $! > "$dir/apiserver.pid"
  wait_for "https://127.0.0.1:$API_PORT/readyz" 60 --cacert "$dir/certs/apiserver.crt" -H 'Authorization: Bearer devtoken' ||
    { tail -20 "$dir/apiserver.log" >&2; return 1; }
}

stop_pid() { # FILE
  [ -f "$1" ] || return 0
  local pid; pid=$(cat "$1"); rm -f "$1"
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

up() {
  local dir=$1
  "$HERE/k8s-build.sh" --check "$RELEASE" kube-apiserver > /dev/null ||
    { echo "kube-apiserver $RELEASE is not built: run DAPIFS_K8S=$RELEASE $0 build" >&2; exit 1; }
  mkdir -p "$dir/certs" "$dir/etcd" && chmod 700 "$dir/etcd"
  printf 'release=%s\nnode=%s\n' "$RELEASE" "${DAPIFS_API_NODE:-}" > "$dir/api.env"
  [ -f "$dir/sa.key" ] || { openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null; openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null; }
  echo 'devtoken,admin,admin-uid,"system:masters"' > "$dir/tokens.csv"
  etcd --name local --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-cluster "local=http://127.0.0.1:$((ETCD_PORT + 10))" --listen-metrics-urls '' >"$dir/etcd.log" 2>&1 &
  echo $! > "$dir/etcd.pid"
  wait_for "http://127.0.0.1:$ETCD_PORT/health" 30 || { tail -20 "$dir/etcd.log" >&2; exit 1; }
  start_api "$dir"
  local ca; ca=$(base64 -w0 < "$dir/certs/apiserver.crt")
  cat > "$dir/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority-data: "$ca"}
users:
- name: admin
  user: {token: devtoken}
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
KC
  echo "ready: KUBECONFIG=$dir/kubeconfig"
}

case "${1:-}" in
  build) build ;;
  built) "$HERE/k8s-build.sh" --check "$RELEASE" kube-apiserver ;;
  up) up "${2:?DIR}" ;;
  down) stop_pid "${2:?DIR}/apiserver.pid"; stop_pid "$2/etcd.pid" ;;
  stop-api) stop_pid "${2:?DIR}/apiserver.pid" ;;
  start-api) start_api "${2:?DIR}" ;;
  *) echo "usage: $0 build | built | up DIR | down DIR | stop-api DIR | start-api DIR" >&2; exit 2 ;;
esac
