#!/bin/bash
# A real single-node Kubernetes on this machine, for the tests and by hand: etcd, kube-apiserver
# (scripts/kube-apiserver.sh), kube-scheduler, kube-controller-manager, containerd + runc and the
# kubelet, all unmodified and of one release, all offline (the images are built here) and with all
# traffic on loopback: the kubelet serves on 127.0.0.1 only and the API server never dials it, so
# `kubectl logs/exec` don't work; read /var/log/pods/<ns>_<pod>_<uid>/<container>/0.log instead.
# The scheduler and the controller manager serve nothing (no ports): a DaemonSet's pods are
# scheduled, a rollout and a namespace deletion proceed, and pods get their ServiceAccount's
# token (the controller manager signs with the API server's key pair, DIR/cp/sa.key) as in a
# cluster. Pods are hostNetwork.
#   DAPIFS_K8S=RELEASE (1.20.2 by default) picks the release: 1.20.2 is built from Debian's
#   source tree, any other from Kubernetes' Go modules (scripts/k8s-build.sh, which lists them):
#     DAPIFS_K8S=1.37.2 scripts/kube-node.sh build && DAPIFS_K8S=1.37.2 scripts/kube-node.sh up DIR
#   down, kubelet-stop and kubelet-start use the release that up started, whatever DAPIFS_K8S says.
#   scripts/kube-node.sh build       build the release's programs, the pause and busybox images and
#                                    inotify-watch into the cache, once; print their paths
#   scripts/kube-node.sh built       exit 0 iff all of that is built
#   scripts/kube-node.sh up DIR      start everything with all state in DIR; write DIR/kubeconfig
#                                    (admin); return when the node (dapifs-node) is Ready
#   scripts/kube-node.sh down DIR    stop the controllers, delete the pods, stop everything,
#                                    unmount everything under DIR, remove the cgroups and pod logs
#                                    the node made
#   scripts/kube-node.sh kubelet-stop DIR   stop only the kubelet of a node that is up (SIGTERM,
#                                    SIGKILL after 5 s): its containers, and the volumes mounted
#                                    for them, go on; a restart or an upgrade of the kubelet
#   scripts/kube-node.sh kubelet-start DIR  start it again, as up does, on the same state; return
#                                    when it has posted the node Ready (it adopts the running pods)
# Ports (all on 127.0.0.1): DAPIFS_NODE_ETCD_PORT (33790; peer +10), DAPIFS_NODE_API_PORT (36443),
# DAPIFS_NODE_KUBELET_PORT (30250; healthz -2).
# The kubelet's root is DIR/kubelet: CSI drivers register in DIR/kubelet/plugins_registry and
# serve DIR/kubelet/plugins/<driver>/csi.sock. DAPIFS_NODE_KUBELET_DIR=/var/lib/kubelet gives it
# a cluster's root instead, for manifests written for one (down unmounts what is under it, and
# removes what the node added to it). Pods run images localhost/busybox:1.35 (with
# /bin/inotify-watch) and localhost/pause:3.4 with imagePullPolicy: Never, on node dapifs-node;
# DAPIFS_NODE_IMAGES="A.tar B.tar" imports more (docker-archive or OCI tarballs) as up starts.
# A pod reaches the API server as in a cluster, with its ServiceAccount's token at the `kubernetes`
# Service's address, when DAPIFS_NODE_API_PORT=443: the node's Service range is 127.0.0.0/24, so
# that Service's ClusterIP is 127.0.0.1, where the API server listens, and its port is always 443
# (no kube-proxy runs to route it anywhere else). Such a pod must be hostNetwork.
# Both releases run on bookworm's containerd 1.6: it serves CRI v1alpha2, which kubelet 1.20
# speaks, and CRI v1, which newer kubelets speak (kubelet 1.37 falls back from the RuntimeConfig
# call containerd 1.x lacks, and says 1.38 will need it). Kubelet 1.37 refuses this machine's
# cgroup v1 unless failCgroupV1 is false (its default is true), which its configuration here says.
# Only one node per machine: the kubelet's device-plugin socket and /var/log/pods are fixed paths.
# Needs (scripts/setup.sh installs them): what kube-apiserver.sh needs, containerd runc
# busybox-static jq gcc, and root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${DAPIFS_CACHE:-$HOME/.cache/dapifs}
RELEASE=${DAPIFS_K8S:-1.20.2}
WATCH=$CACHE/bin/inotify-watch
IMAGES=$CACHE/node-images
PAUSE_TAR=$IMAGES/pause-3.4.tar
BUSYBOX_TAR=$IMAGES/busybox-1.35.tar
NODE=dapifs-node
ETCD_PORT=${DAPIFS_NODE_ETCD_PORT:-33790}
API_PORT=${DAPIFS_NODE_API_PORT:-36443}
KUBELET_PORT=${DAPIFS_NODE_KUBELET_PORT:-30250}
KUBELET_DIR=${DAPIFS_NODE_KUBELET_DIR:-}

# ---------------------------------------------------------------------------------------- build

# The release's programs, as k8s-build.sh built them (RELEASE may change when up's env is loaded).
bin() { echo "$CACHE/bin/$1-$RELEASE"; }

# mkimage ROOTFS REPO:TAG OUT ENTRYPOINT-JSON CMD-JSON: a one-layer docker-archive tarball.
mkimage() {
  local rootfs=$1 tag=$2 out=$3 ep=$4 cmd=$5 w diff cid
  w=$(mktemp -d)
  tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$rootfs" -cf "$w/layer.tar" .
  diff=$(sha256sum "$w/layer.tar" | cut -d' ' -f1)
  cat > "$w/config.json" <<J
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z",
 "config":{"Entrypoint":$ep,"Cmd":$cmd,"Env":["PATH=/bin"],"WorkingDir":"/"},
 "rootfs":{"type":"layers","diff_ids":["sha256:$diff"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"dapifs kube-node.sh"}]}
J
  cid=$(sha256sum "$w/config.json" | cut -d' ' -f1)
  mv "$w/config.json" "$w/$cid.json"
  echo "[{\"Config\":\"$cid.json\",\"RepoTags\":[\"$tag\"],\"Layers\":[\"layer.tar\"]}]" > "$w/manifest.json"
  tar -C "$w" -cf "$out.tmp" manifest.json "$cid.json" layer.tar
  mv "$out.tmp" "$out"
  rm -rf "$w"
}

build_images() {
  mkdir -p "$CACHE/bin" "$IMAGES"
  if [ ! -x "$WATCH" ] || [ "$HERE/inotify-watch.c" -nt "$WATCH" ]; then
    gcc -static -O2 -Wall -Werror -o "$WATCH.tmp" "$HERE/inotify-watch.c" >&2 && mv "$WATCH.tmp" "$WATCH"
  fi
  local w a
  if [ ! -f "$PAUSE_TAR" ]; then
    w=$(mktemp -d) && mkdir "$w/rootfs"
    gcc -Os -Wall -Werror -static -DVERSION=v3.4-dapifs -o "$w/rootfs/pause" "$("$HERE/k8s-source.sh")/build/pause/linux/pause.c" >&2
    mkimage "$w/rootfs" localhost/pause:3.4 "$PAUSE_TAR" '["/pause"]' 'null'
    rm -rf "$w"
  fi
  if [ ! -f "$BUSYBOX_TAR" ] || [ "$WATCH" -nt "$BUSYBOX_TAR" ] || [ /bin/busybox -nt "$BUSYBOX_TAR" ]; then
    [ -x /bin/busybox ] || { echo "no /bin/busybox: apt-get install busybox-static" >&2; exit 1; }
    w=$(mktemp -d) && mkdir -p "$w/rootfs/"{bin,tmp,etc,proc,sys,dev}
    chmod 1777 "$w/rootfs/tmp"
    cp /bin/busybox "$WATCH" "$w/rootfs/bin/"
    for a in $(/bin/busybox --list); do [ -e "$w/rootfs/bin/$a" ] || ln -s busybox "$w/rootfs/bin/$a"; done
    printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$w/rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$w/rootfs/etc/group"
    mkimage "$w/rootfs" localhost/busybox:1.35 "$BUSYBOX_TAR" 'null' '["sh"]'
    rm -rf "$w"
  fi
}

build() {
  "$HERE/k8s-build.sh" "$RELEASE"
  build_images
  echo "$PAUSE_TAR"; echo "$BUSYBOX_TAR"; echo "$WATCH"
}

built() {
  "$HERE/k8s-build.sh" --check "$RELEASE" > /dev/null && [ -f "$PAUSE_TAR" ] && [ -f "$BUSYBOX_TAR" ] && [ -x "$WATCH" ] &&
    [ ! "$HERE/inotify-watch.c" -nt "$WATCH" ] && [ ! "$WATCH" -nt "$BUSYBOX_TAR" ]
}

# ------------------------------------------------------------------------------------- up/down

api() { # METHOD PATH [curl args]: a request to the API server as admin
  local m=$1 p=$2; shift 2
  curl -fsS -X "$m" --cacert "$DIR/cp/certs/apiserver.crt" -H 'Authorization: Bearer devtoken' "$@" "https://127.0.0.1:$API_PORT$p"
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

until_ok() { # SECONDS WHAT COMMAND...: poll every 0.1 s
  local n=$(( $1 * 10 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    n=$((n - 1)); [ $n -gt 0 ] || { echo "timed out waiting for $what" >&2; return 1; }
    sleep 0.1
  done
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# The node is Ready, as posted by this kubelet (not a Ready left in etcd by an earlier one).
node_ready() {
  api GET "/api/v1/nodes/$NODE" | jq -e --argjson since "$1" \
    '.status.conditions[]? | select(.type == "Ready" and .status == "True" and (.lastHeartbeatTime | fromdateiso8601) >= $since)'
}

write_configs() {
  mkdir -p "$DIR"/{logs,run,containerd,cni/net.d,cni/bin,kubelet-certs,volume-plugins} "$KUBELET_DIR"
  cat > "$DIR/containerd/config.toml" <<T
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
[grpc]
  address = "$DIR/containerd/containerd.sock"
[ttrpc]
  address = "$DIR/containerd/containerd.sock.ttrpc"
[debug]
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:3.4"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # Root here lacks CAP_SYS_RESOURCE: the kubelet's oom_score_adj -998 would fail the sandbox.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$DIR/cni/bin"
    conf_dir = "$DIR/cni/net.d"
T
  # Pods are hostNetwork. A conflist that loads is all the runtime needs to report NetworkReady
  # (and the node to be Ready); its plugin is never run, so no CNI plugins are installed.
  cat > "$DIR/cni/net.d/10-dapifs.conflist" <<'J'
{"cniVersion": "0.4.0", "name": "dapifs", "plugins": [{"type": "loopback"}]}
J
  cat > "$DIR/kubelet-config.yaml" <<Y
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $((KUBELET_PORT - 2))
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
failSwapOn: false
makeIPTablesUtilChains: false
volumePluginDir: $DIR/volume-plugins
staticPodPath: ""
resolvConf: /etc/resolv.conf
syncFrequency: 1m
fileCheckFrequency: 20s
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
runtimeRequestTimeout: 2m
nodeStatusUpdateFrequency: 2s
Y
  # Fields that kubelet 1.20 does not know. Its containerd flags are removed in later releases.
  if [ "$RELEASE" != 1.20.2 ]; then
    cat >> "$DIR/kubelet-config.yaml" <<Y
containerRuntimeEndpoint: unix://$DIR/containerd/containerd.sock
failCgroupV1: false
Y
  fi
}

# Starts the kubelet on DIR's state (NODE_IP: its --node-ip) and waits until it has posted the
# node Ready, or exits 1 with the end of its log. [1]: count only heartbeats from the second after
# this one (heartbeats have whole seconds: one an earlier kubelet posted this second would pass).
start_kubelet() {
  local sock=$DIR/containerd/containerd.sock t_kubelet
  t_kubelet=$(( $(date +%s) + ${1:-0} ))
  # Else the AWS credential provider asks the EC2 metadata service (169.254.169.254) for credentials.
  local runtime=()
  [ "$RELEASE" != 1.20.2 ] || runtime=(--container-runtime=remote --container-runtime-endpoint="unix://$sock"
    --containerd="$sock" --pod-infra-container-image=localhost/pause:3.4)
  AWS_EC2_METADATA_DISABLED=true ${DAPIFS_NODE_KUBELET_WRAPPER:-} "$(bin kubelet)" --config="$DIR/kubelet-config.yaml" --kubeconfig="$DIR/kubeconfig" \
    "${runtime[@]}" --root-dir="$KUBELET_DIR" --cert-dir="$DIR/kubelet-certs" \
    --hostname-override="$NODE" --node-ip="$NODE_IP" --address=127.0.0.1 --v=2 >> "$DIR/logs/kubelet.log" 2>&1 &
  echo $! > "$DIR/run/kubelet.pid"
  until node_ready "$t_kubelet" > /dev/null 2>&1; do
    alive "$DIR/run/kubelet.pid" || { echo "the kubelet exited:" >&2; tail -20 "$DIR/logs/kubelet.log" >&2; exit 1; }
    [ "$(date +%s)" -lt $((t_kubelet + 60)) ] || { echo "the node did not become Ready in 60 s:" >&2; tail -20 "$DIR/logs/kubelet.log" >&2; exit 1; }
    sleep 0.2
  done
}

# The scheduler and the controller manager, with the admin's kubeconfig; neither serves a port
# (--secure-port=0; on 1.20 also --port=0, its insecure port). The controller manager runs its
# default controllers and signs ServiceAccount tokens with the API server's key; the pods' CA
# (kube-root-ca.crt) is the one that signed the API server's self-signed serving certificate, the
# last one in its file (1.37's trust-bundle publisher refuses a file that starts with a non-CA).
start_controllers() {
  local noport=()
  [ "$RELEASE" != 1.20.2 ] || noport=(--port=0)
  awk '/-BEGIN CERTIFICATE-/ { pem = "" } { pem = pem $0 "\n" } END { printf "%s", pem }' "$DIR/cp/certs/apiserver.crt" > "$DIR/cp/ca.crt"
  # Else it makes /usr/libexec/kubernetes/kubelet-plugins/volume/exec on the host.
  "$(bin kube-controller-manager)" --kubeconfig="$DIR/kubeconfig" --leader-elect=false --secure-port=0 "${noport[@]}" \
    --service-account-private-key-file="$DIR/cp/sa.key" --root-ca-file="$DIR/cp/ca.crt" \
    --flex-volume-plugin-dir="$DIR/volume-plugins" --v=1 > "$DIR/logs/kube-controller-manager.log" 2>&1 &
  echo $! > "$DIR/run/kube-controller-manager.pid"
  "$(bin kube-scheduler)" --kubeconfig="$DIR/kubeconfig" --leader-elect=false --secure-port=0 "${noport[@]}" \
    --v=1 > "$DIR/logs/kube-scheduler.log" 2>&1 &
  echo $! > "$DIR/run/kube-scheduler.pid"
}

# Waits until the controller manager works (it has made the default namespace's ServiceAccount)
# while both controllers live.
wait_controllers() {
  local n=300 c
  until api GET /api/v1/namespaces/default/serviceaccounts/default > /dev/null 2>&1; do
    for c in kube-controller-manager kube-scheduler; do
      alive "$DIR/run/$c.pid" || { echo "$c exited:" >&2; tail -20 "$DIR/logs/$c.log" >&2; exit 1; }
    done
    n=$((n - 1)); [ $n -gt 0 ] || { echo "timed out waiting for the controller manager (the default ServiceAccount)" >&2; exit 1; }
    sleep 0.1
  done
}

up() {
  [ "$RELEASE" = 1.20.2 ] || [ -f "$HERE/k8s-modules/$RELEASE/go.mod" ] ||
    { echo "DAPIFS_K8S=$RELEASE: no such release here (1.20.2, or one of scripts/k8s-modules/)" >&2; exit 2; }
  built || { echo "the node is not built: run DAPIFS_K8S=$RELEASE $0 build" >&2; exit 1; }
  [ "$(id -u)" -eq 0 ] || { echo "$0 up needs root" >&2; exit 1; }
  local t0 node_ip sock ctr m
  t0=$(now)
  # The kubelet refuses a loopback --node-ip; it is only reported in the Node's status, nothing
  # connects to it (--address=127.0.0.1, and the API server never dials the kubelet).
  node_ip=${DAPIFS_NODE_IP:-$(hostname -I | tr ' ' '\n' | grep -m1 -E '^[0-9]+(\.[0-9]+){3}$' || true)}
  [ -n "$node_ip" ] || { echo "no non-loopback IPv4 address for the kubelet's --node-ip (set DAPIFS_NODE_IP)" >&2; exit 1; }
  NODE_IP=$node_ip
  for m in ${DAPIFS_NODE_IMAGES:-}; do [ -f "$m" ] || { echo "DAPIFS_NODE_IMAGES: $m: no such file" >&2; exit 2; }; done
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  KUBELET_DIR=${KUBELET_DIR:-$DIR/kubelet}
  case $KUBELET_DIR in /*) ;; *) echo "DAPIFS_NODE_KUBELET_DIR must be an absolute path, not '$KUBELET_DIR'" >&2; exit 2 ;; esac
  if [ "$KUBELET_DIR" != "$DIR/kubelet" ] && findmnt -rn -o TARGET | grep -q "^$KUBELET_DIR/"; then
    echo "$KUBELET_DIR has mounts below it: another kubelet uses it?" >&2; exit 1
  fi
  # What down must not remove: pod logs, and the kubelet's fixed directories, from before.
  mkdir -p "$DIR/run"
  ls /var/log/pods 2>/dev/null > "$DIR/run/podlogs.before" || true
  for m in /var/log/pods /var/log/containers /var/lib/kubelet "$KUBELET_DIR"; do [ ! -e "$m" ] || echo "$m"; done > "$DIR/run/existed"
  ls -A "$KUBELET_DIR" 2>/dev/null > "$DIR/run/kubelet-dir.before" || true
  write_configs
  printf 'RELEASE=%s\nETCD_PORT=%s\nAPI_PORT=%s\nKUBELET_PORT=%s\nNODE_IP=%s\nKUBELET_DIR=%s\n' "$RELEASE" "$ETCD_PORT" "$API_PORT" "$KUBELET_PORT" "$node_ip" "$KUBELET_DIR" > "$DIR/run/env"

  # The control plane starts in the background while containerd starts and takes the images.
  ( DAPIFS_K8S=$RELEASE DAPIFS_API_NODE=1 DAPIFS_ETCD_PORT=$ETCD_PORT DAPIFS_API_PORT=$API_PORT "$HERE/kube-apiserver.sh" up "$DIR/cp" > "$DIR/logs/cp-up.log" 2>&1
    echo $? > "$DIR/run/cp.rc" ) &
  CP_UP=$!
  # Failing early, still leave the API server's pid files for down to find.
  trap 'wait "$CP_UP" 2>/dev/null || true' EXIT
  sock=$DIR/containerd/containerd.sock
  containerd --config "$DIR/containerd/config.toml" > "$DIR/logs/containerd.log" 2>&1 &
  echo $! > "$DIR/run/containerd.pid"
  ctr="ctr --address $sock -n k8s.io"
  until_ok 30 containerd $ctr version || { tail -20 "$DIR/logs/containerd.log" >&2; exit 1; }
  $ctr images import "$PAUSE_TAR" > /dev/null
  $ctr images import "$BUSYBOX_TAR" > /dev/null
  for m in ${DAPIFS_NODE_IMAGES:-}; do $ctr images import "$m" > /dev/null; done
  until_ok 90 "the API server" test -f "$DIR/run/cp.rc"
  [ "$(cat "$DIR/run/cp.rc")" = 0 ] || { cat "$DIR/logs/cp-up.log" >&2; exit 1; }
  cp "$DIR/cp/kubeconfig" "$DIR/kubeconfig"
  # A Node left in etcd by an earlier kubelet would look Ready at once.
  api DELETE "/api/v1/nodes/$NODE" > /dev/null 2>&1 || true
  start_controllers

  : > "$DIR/logs/kubelet.log" # start_kubelet appends: a restart's log follows the first one's
  start_kubelet
  wait_controllers
  echo "ready: KUBECONFIG=$DIR/kubeconfig (node $NODE Ready in $(since "$t0") s)" >&2
  echo "$DIR/kubeconfig"
}

stop_pid() { # FILE [tenths of a second before SIGKILL]
  [ -f "$1" ] || return 0
  local pid n=${2:-50}; pid=$(cat "$1"); rm -f "$1"
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq "$n"); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

# Every process in the kubepods cgroups (the containers), and the shims serving our containerd.
our_procs() {
  cat /sys/fs/cgroup/pids/kubepods/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/cgroup.procs \
    /sys/fs/cgroup/pids/kubepods/*/*/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/*/*/cgroup.procs \
    /sys/fs/cgroup/unified/kubepods/cgroup.procs 2>/dev/null || true
  pgrep -f -- "-address $DIR/containerd/containerd.sock( |\$)" || true
  pgrep -f -- "--root-dir=$KUBELET_DIR( |\$)" || true
  pgrep -f -- "--config $DIR/containerd/config.toml( |\$)" || true
}

down() {
  [ -d "$DIR" ] || return 0
  DIR=$(cd "$DIR" && pwd)
  # shellcheck disable=SC1091
  if [ -f "$DIR/run/env" ]; then . "$DIR/run/env"; fi
  KUBELET_DIR=${KUBELET_DIR:-$DIR/kubelet}
  local t0 pods ctr sock m p left
  t0=$(now)
  # No controller may make pods again (a DaemonSet's, a ReplicaSet's) while they are deleted.
  stop_pid "$DIR/run/kube-controller-manager.pid" 5
  stop_pid "$DIR/run/kube-scheduler.pid" 5
  # Let the kubelet stop the pods and tear their volumes down (a CSI driver sees its unpublish).
  if alive "$DIR/run/kubelet.pid" && [ -f "$DIR/cp/apiserver.pid" ]; then
    pods=$(api GET /api/v1/pods 2>/dev/null | jq -r '.items[] | .metadata.namespace + "/" + .metadata.name' || true)
    for p in $pods; do
      api DELETE "/api/v1/namespaces/${p%/*}/pods/${p#*/}?gracePeriodSeconds=1" > /dev/null 2>&1 || true
    done
    # Done once the containers are gone and the kubelet has unmounted the pods' volumes; the
    # pods themselves leave the API only up to 10 s later (the kubelet's status manager period).
    if [ -n "$pods" ]; then
      for _ in $(seq 300); do
        if [ -z "$(ctr --address "$DIR/containerd/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null)" ] &&
           ! findmnt -rn -o TARGET | grep "^$KUBELET_DIR/pods/" > /dev/null; then break; fi
        sleep 0.1
      done
    fi
  fi
  # Nothing is left to save (all state is thrown away): the control plane goes meanwhile, and
  # each process gets 0.5 s after SIGTERM (the API server would take 5 s).
  ( stop_pid "$DIR/cp/apiserver.pid" 5; stop_pid "$DIR/cp/etcd.pid" 5 ) &
  local cp_down=$!
  stop_pid "$DIR/run/kubelet.pid" 5
  sock=$DIR/containerd/containerd.sock
  ctr="ctr --address $sock -n k8s.io"
  if alive "$DIR/run/containerd.pid"; then
    left=$($ctr tasks ls -q 2>/dev/null || true)
    for p in $left; do $ctr tasks kill -s SIGKILL "$p" > /dev/null 2>&1 || true; done
    for p in $left; do
      for _ in $(seq 20); do $ctr tasks rm -f "$p" > /dev/null 2>&1 && break; sleep 0.1; done
    done
  fi
  stop_pid "$DIR/run/containerd.pid" 5
  for _ in $(seq 30); do
    p=$(our_procs)
    [ -n "$p" ] || break
    kill -9 $p 2>/dev/null || true
    sleep 0.1
  done
  wait "$cp_down" || true
  findmnt -rn -o TARGET | { grep -E "^($DIR|$KUBELET_DIR)(/|\$)" || true; } | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
  for m in /sys/fs/cgroup/*/kubepods; do
    if [ -d "$m" ]; then find "$m" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
  done
  if [ -f "$DIR/run/podlogs.before" ]; then
    for p in $(ls /var/log/pods 2>/dev/null | grep -vxF -f "$DIR/run/podlogs.before"); do
      rm -rf "/var/log/pods/${p:?}"
    done
    for p in /var/log/containers/*.log; do # the kubelet's links to the logs just removed
      if [ -L "$p" ] && [ ! -e "$p" ]; then case $(readlink "$p") in /var/log/pods/*) rm -f "$p" ;; esac; fi
    done
    grep -qxF /var/log/pods "$DIR/run/existed" || rmdir /var/log/pods 2>/dev/null || true
    grep -qxF /var/log/containers "$DIR/run/existed" || rmdir /var/log/containers 2>/dev/null || true
    grep -qxF /var/lib/kubelet "$DIR/run/existed" || rm -rf /var/lib/kubelet # only device-plugins/kubelet.sock
    # A kubelet directory outside DIR: what the node added to it goes (all of it if it is new).
    if [ "$KUBELET_DIR" != "$DIR/kubelet" ]; then
      if ! grep -qxF "$KUBELET_DIR" "$DIR/run/existed"; then rm -rf "$KUBELET_DIR"
      elif [ -f "$DIR/run/kubelet-dir.before" ]; then
        for p in $(ls -A "$KUBELET_DIR" 2>/dev/null | grep -vxF -f "$DIR/run/kubelet-dir.before"); do rm -rf "${KUBELET_DIR:?}/$p"; done
      fi
    fi
  fi
  rm -f "$DIR/run/podlogs.before" "$DIR/run/existed" "$DIR/run/kubelet-dir.before"
  left=$(findmnt -rn -o TARGET | grep -E "^($DIR|$KUBELET_DIR)(/|\$)" || true)
  [ -z "$left" ] || { echo "mounts left under $DIR: $left" >&2; return 1; }
  echo "stopped in $(since "$t0") s" >&2
}

# The node's settings as up left them: its ports and the kubelet's --node-ip.
load_env() {
  [ -d "$DIR" ] || { echo "no node in $DIR" >&2; exit 1; }
  DIR=$(cd "$DIR" && pwd)
  [ -f "$DIR/run/env" ] || { echo "no node was started in $DIR (no run/env)" >&2; exit 1; }
  # shellcheck disable=SC1091
  . "$DIR/run/env"
  KUBELET_DIR=${KUBELET_DIR:-$DIR/kubelet}
}

kubelet_stop() {
  load_env
  local t0; t0=$(now)
  stop_pid "$DIR/run/kubelet.pid" 50
  echo "kubelet stopped in $(since "$t0") s" >&2
}

kubelet_start() {
  load_env
  ! alive "$DIR/run/kubelet.pid" || { echo "the kubelet is running (pid $(cat "$DIR/run/kubelet.pid"))" >&2; exit 1; }
  [ -n "${NODE_IP:-}" ] || { echo "$DIR/run/env has no NODE_IP" >&2; exit 1; }
  local t0; t0=$(now)
  start_kubelet 1
  echo "kubelet started: node $NODE Ready in $(since "$t0") s" >&2
}

case "${1:-}" in
  build) build ;;
  built) built ;;
  up) DIR=${2:?DIR}; up ;;
  down) DIR=${2:?DIR}; down ;;
  kubelet-stop) DIR=${2:?DIR}; kubelet_stop ;;
  kubelet-start) DIR=${2:?DIR}; kubelet_start ;;
  *) echo "usage: $0 build | built | up DIR | down DIR | kubelet-stop DIR | kubelet-start DIR" >&2; exit 2 ;;
esac
