# shellcheck shell=bash
# The test environment's node, sourced by scripts/testenv: containerd + runc + CNI from Debian's
# packages, kubelet, kube-scheduler, kube-proxy, CoreDNS and a hostPath provisioner from the
# cached Go build, and images built from Debian packages (tools/images/build.sh). Pods really run.
#
# Network containment: pods live on the bridge aienv0 (POD_CIDR, the node is its gateway
# address) with routes only to the pod subnet and the Service range; no default route, no
# masquerading, and a raw-table rule drops anything a pod sends elsewhere. The Service range is
# routed onto the bridge on the host, so an unanswered ClusterIP never leaves the machine.
# Host settings kubelet, kube-proxy and CNI change (sysctls, iptables) are recorded by `up` and
# restored by `down`.

NODE_NAME=aienv-node
BRIDGE=aienv0
POD_CIDR=10.244.0.0/24
NODE_IP=10.244.0.1
SERVICE_CIDR=10.96.0.0/16
STORAGE_CLASS=aienv-local
# Which state dir's node holds the machine-wide parts (see claim_node).
NODE_OWNER="${AIENV_NODE_OWNER:-/run/aienv-testenv-node}"
NODE_SYSCTLS=(net.ipv4.ip_forward net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables
  net.bridge.bridge-nf-call-ip6tables vm.overcommit_memory kernel.panic kernel.panic_on_oops)
NODE_SERVICES=(containerd kubelet kube-scheduler kube-proxy coredns local-provisioner apiserver-relay s3-relay)
PROC_MATCH+=([containerd]=containerd [kubelet]=kubelet [kube-scheduler]=kube-scheduler
  [kube-proxy]=kube-proxy [coredns]=coredns [local-provisioner]=local-provisioner [apiserver-relay]=socat [s3-relay]=socat)

# AIENV_NODE=0 keeps the pod-less mode (no root needed): control plane, PostgreSQL, S3, GCS only.
node_enabled() { [[ ${AIENV_NODE:-1} != 0 ]]; }

ensure_node_tools() {
  [[ $EUID -eq 0 ]] || die "the node needs root (containerd, kubelet, a bridge); AIENV_NODE=0 runs without it"
  need_cmd containerd containerd
  need_cmd runc runc
  [[ -x /usr/lib/cni/bridge ]] || apt_install containernetworking-plugins
  need_cmd iptables iptables
  need_cmd conntrack conntrack
  need_cmd ip iproute2
  need_cmd debootstrap debootstrap
  need_cmd umoci umoci
  need_cmd skopeo skopeo
  need_cmd socat socat
}

ctr_() { ctr --address "$STATE/containerd/containerd.sock" --namespace k8s.io "$@"; }

# import_image ARCHIVE REF: load a docker archive into containerd, unless containerd already has
# that very archive's image under REF.
import_image() {
  local archive=$1 ref=$2 key
  key="$(basename "$archive" .tar)"
  if [[ "$(cat "$STATE/node/images/$key" 2>/dev/null)" == "$ref" ]] &&
    ctr_ images ls -q 2>/dev/null | grep -qxF "$ref"; then
    return
  fi
  ctr_ images import "$archive" >/dev/null || die "importing $ref failed"
  # Pinned: the kubelet's image garbage collection (a full disk) must not delete images no
  # registry can give back.
  ctr_ images label "$ref" io.cri-containerd.pinned=pinned >/dev/null ||
    die "pinning $ref failed"
  mkdir -p "$STATE/node/images"
  rm -f "$STATE/node/images/"*"-${key#*-}" 2>/dev/null || true
  echo "$ref" >"$STATE/node/images/$key"
  log "image $ref loaded"
}

# node_image NAME [ARG]: build (cached) and load one of tools/images' images.
node_image() {
  local out
  out="$("$ROOT/tools/images/build.sh" "$@")" || die "building the $1 image failed"
  # shellcheck disable=SC2086
  import_image $out
}

record_host_settings() {
  local d="$STATE/node/host" s
  mkdir -p "$d"
  [[ -f $d/sysctl ]] && return # recorded by an earlier, interrupted `up`: keep the original
  for s in "${NODE_SYSCTLS[@]}"; do
    printf '%s=%s\n' "$s" "$(sysctl -n "$s" 2>/dev/null || echo -)"
  done >"$d/sysctl.tmp"
  iptables-save >"$d/iptables"
  ip6tables-save >"$d/ip6tables" 2>/dev/null || true
  ls /var/run/netns 2>/dev/null >"$d/netns" || true
  mv "$d/sysctl.tmp" "$d/sysctl"
}

restore_host_settings() {
  local d="$STATE/node/host" line t
  [[ -f $d/sysctl ]] || return 0
  # Tables kube-proxy/kubelet created from nothing are emptied; the rest return to the dump.
  for t in filter nat mangle raw; do
    if ! grep -q "^\*$t" "$d/iptables"; then iptables -t "$t" -F 2>/dev/null; iptables -t "$t" -X 2>/dev/null; fi
  done
  iptables-restore <"$d/iptables" || log "warning: restoring iptables failed"
  if [[ -s $d/ip6tables ]]; then ip6tables-restore <"$d/ip6tables" || true; fi
  while IFS= read -r line; do
    [[ ${line#*=} == - ]] && continue
    sysctl -qw "$line" >/dev/null 2>&1 || log "warning: could not restore $line"
  done <"$d/sysctl"
  rm -rf "$d"
}

setup_pod_network() {
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 >/dev/null
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
  # The wall: what a pod sends goes to pods, the node or a Service address, or nowhere.
  iptables -t raw -N AIENV-POD-EGRESS 2>/dev/null || iptables -t raw -F AIENV-POD-EGRESS
  iptables -t raw -A AIENV-POD-EGRESS -d "$POD_CIDR" -j RETURN
  iptables -t raw -A AIENV-POD-EGRESS -d "$SERVICE_CIDR" -j RETURN
  iptables -t raw -A AIENV-POD-EGRESS -j DROP
  iptables -t raw -C PREROUTING -i "$BRIDGE" -j AIENV-POD-EGRESS 2>/dev/null ||
    iptables -t raw -I PREROUTING -i "$BRIDGE" -j AIENV-POD-EGRESS
  iptables -N AIENV-FORWARD 2>/dev/null || iptables -F AIENV-FORWARD
  iptables -A AIENV-FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  iptables -A AIENV-FORWARD -i "$BRIDGE" -j DROP
  iptables -A AIENV-FORWARD -o "$BRIDGE" -j DROP
  iptables -C FORWARD -j AIENV-FORWARD 2>/dev/null || iptables -I FORWARD -j AIENV-FORWARD

  mkdir -p "$STATE/cni/net.d" "$STATE/cni/ipam"
  cat >"$STATE/cni/net.d/10-aienv.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "aienv",
  "plugins": [{
    "type": "bridge",
    "bridge": "$BRIDGE",
    "isGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "dataDir": "$STATE/cni/ipam",
      "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "${NODE_IP%.*}.10", "gateway": "$NODE_IP"}]],
      "routes": [{"dst": "$SERVICE_CIDR"}]
    }
  }]
}
EOF
}

teardown_pod_network() {
  ip route del "$SERVICE_CIDR" dev "$BRIDGE" 2>/dev/null || true
  ip link del "$BRIDGE" 2>/dev/null || true
  iptables -t raw -D PREROUTING -i "$BRIDGE" -j AIENV-POD-EGRESS 2>/dev/null || true
  iptables -t raw -F AIENV-POD-EGRESS 2>/dev/null && iptables -t raw -X AIENV-POD-EGRESS 2>/dev/null || true
  iptables -D FORWARD -j AIENV-FORWARD 2>/dev/null || true
  iptables -F AIENV-FORWARD 2>/dev/null && iptables -X AIENV-FORWARD 2>/dev/null || true
}

start_containerd() {
  local d="$STATE/containerd"
  mkdir -p "$d/root" "$d/state"
  cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[debug]
  level = "warn"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "aienv.local/pause:3.10"
  # root here lacks CAP_SYS_RESOURCE: lowering a container's oom_score_adj below ours fails.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
  # Images come only from tools/images. Every pull goes through a "proxy" on a closed loopback
  # port, so a pod naming an image we did not load fails with ErrImagePull at once, without even
  # a DNS lookup of the registry (containerd 1.6 knows no catch-all hosts.toml).
  start_bg containerd env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
    containerd --config "$d/config.toml"
  wait_until containerd ctr_ version
}

# sign_cert NAME SUBJECT EXTENSIONS: a key and certificate from the test CA.
sign_cert() {
  (
    cd "$STATE/pki"
    umask 077
    openssl req -new -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
    printf '%b' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 365 -extfile "$1.ext"
    rm -f "$1.csr" "$1.ext"
    chmod 644 "$1.crt"
  ) >/dev/null 2>&1 || die "certificate $1 failed"
}

start_kubelet() { # start_kubelet API_URL
  local d="$STATE/node" healthz port
  mkdir -p "$d" "$STATE/kubelet" "$STATE/pod-logs"
  sign_cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
  sign_cert kubelet-serving "/O=system:nodes/CN=system:node:$NODE_NAME" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:$NODE_IP,DNS:$NODE_NAME\n"
  write_kubeconfig_for "$d/kubelet.kubeconfig" "$1" kubelet-client
  read -r healthz port <<<"$(free_ports 2)"
  echo "nameserver $NODE_IP" >"$d/resolv.conf"
  cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host mounts cgroup v1 hierarchies and has no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$STATE/containerd/containerd.sock
address: $NODE_IP
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz
tlsCertFile: $STATE/pki/kubelet-serving.crt
tlsPrivateKeyFile: $STATE/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
resolvConf: $d/resolv.conf
podLogsDir: $STATE/pod-logs
volumePluginDir: $STATE/kubelet/volume-plugins
failSwapOn: false
serializeImagePulls: false
# Images cannot be pulled again here: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 200Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
maxPods: 60
nodeStatusUpdateFrequency: 4s
shutdownGracePeriod: 0s
EOF
  start_bg kubelet "$KBIN/kubelet" --config="$d/kubelet.yaml" --kubeconfig="$d/kubelet.kubeconfig" \
    --root-dir="$STATE/kubelet" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
}

write_kubeconfig_for() { # write_kubeconfig_for FILE URL CERT_NAME
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: aienv-testenv
  cluster: {server: $2, certificate-authority: $STATE/pki/ca.crt}
users:
- name: $3
  user: {client-certificate: $STATE/pki/$3.crt, client-key: $STATE/pki/$3.key}
contexts:
- name: aienv-testenv
  context: {cluster: aienv-testenv, user: $3}
current-context: aienv-testenv
EOF
}

start_node_services() {
  local d="$STATE/node" sched_port proxy_healthz proxy_metrics dns_health dns_ready
  read -r sched_port proxy_healthz proxy_metrics dns_health dns_ready <<<"$(free_ports 5)"
  start_bg kube-scheduler "$KBIN/kube-scheduler" --kubeconfig="$STATE/kubeconfig" \
    --authentication-kubeconfig="$STATE/kubeconfig" --authorization-kubeconfig="$STATE/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" --leader-elect=false
  cat >"$d/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
healthzBindAddress: 127.0.0.1:$proxy_healthz
metricsBindAddress: 127.0.0.1:$proxy_metrics
nodePortAddresses: [$NODE_IP/32]
iptables: {localhostNodePorts: false}
# Zero leaves the host's conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start_bg kube-proxy "$KBIN/kube-proxy" --config="$d/kube-proxy.yaml"
  cat >"$d/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
  bind $NODE_IP
  errors
  health 127.0.0.1:$dns_health
  ready 127.0.0.1:$dns_ready
  kubernetes cluster.local in-addr.arpa ip6.arpa {
    kubeconfig $STATE/kubeconfig
    pods insecure
    ttl 5
  }
  cache 5
}
EOF
  start_bg coredns "$KBIN/coredns" -conf "$d/Corefile"
  mkdir -p "$STATE/volumes"
  start_bg local-provisioner "$KBIN/local-provisioner" -kubeconfig "$STATE/kubeconfig" -root "$STATE/volumes"
  wait_until coredns curl -sf --max-time 2 "http://127.0.0.1:$dns_ready/ready"
  wait_until kube-proxy curl -sf --max-time 2 "http://127.0.0.1:$proxy_healthz/healthz"
  "$KBIN/kubectl" --kubeconfig "$STATE/kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $STORAGE_CLASS
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: aienv.local/hostpath
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
EOF
}

# Pods reach the API server as in any cluster, through the `kubernetes` Service (10.96.0.1:443,
# which the serving certificate names). The API server listens on loopback only and loopback is no
# valid endpoint, so socat relays NODE_IP:PORT to it and the Service's EndpointSlice names that
# (the API server's endpoint reconciler is off). The S3 server is relayed the same way, for the
# backup Jobs' pods (AIENV_S3_POD_ENDPOINT).
start_relay() { # start_relay NAME PORT
  start_bg "$1" socat "TCP-LISTEN:$2,bind=$NODE_IP,fork,reuseaddr" "TCP:127.0.0.1:$2"
}

start_pod_routes() { # start_pod_routes API_URL S3_PORT
  local port="${1##*:}"
  start_relay apiserver-relay "$port"
  start_relay s3-relay "$2"
  "$KBIN/kubectl" --kubeconfig "$STATE/kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes}
addressType: IPv4
endpoints:
  - addresses: [$NODE_IP]
    conditions: {ready: true}
ports:
  - {name: https, port: $port, protocol: TCP}
EOF
}

node_ready() {
  "$KBIN/kubectl" --kubeconfig "$STATE/kubeconfig" get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}

# The state dir of the node running on this machine, empty when none: the owner file, or, for a
# node started by a script that wrote none, the path in kube-proxy's command line.
running_node_state() {
  local owner
  owner="$(cat "$NODE_OWNER" 2>/dev/null || true)"
  if [[ -n $owner && -d $owner/node ]]; then
    echo "$owner"
    return
  fi
  # No kube-proxy running is the usual answer, not an error (pgrep exits 1).
  { pgrep -af 'kube-proxy --config=' || true; } | sed -n 's|.*--config=\(.*\)/node/kube-proxy\.yaml.*|\1|p' | head -1
}

# One node per machine: the bridge, its pod addresses, CoreDNS on NODE_IP, the kubepods cgroups
# and kube-proxy's iptables chains are machine-wide, and a second node would silently break the
# first one's pod networking (a ClusterIP that times out). Another checkout's node goes first.
claim_node() {
  local other
  other="$(running_node_state)"
  if [[ -n $other && $other != "$STATE" ]]; then
    log "stopping the test environment at $other first: one node per machine ($BRIDGE, pod addresses and kube-proxy's iptables rules are shared)"
    AIENV_TESTENV_DIR="$other" "$ROOT/scripts/testenv" down || die "could not stop the test environment at $other"
  fi
  echo "$STATE" >"$NODE_OWNER"
}

# Does this state dir's node hold the machine-wide parts? (No owner: an older script's node.)
node_owned() {
  local owner
  owner="$(cat "$NODE_OWNER" 2>/dev/null || true)"
  [[ -z $owner || $owner == "$STATE" ]]
}

# node_up API_URL S3_PORT: everything a pod needs, after the control plane is up.
node_up() {
  log "starting the node: containerd, kubelet, kube-scheduler, kube-proxy, CoreDNS, provisioner"
  claim_node
  record_host_settings
  setup_pod_network
  start_containerd
  node_image pause "$KBIN"
  node_image postgres
  # Ollama for the embedding-server tests (built from its Go module once, ~10 min cold).
  OLLAMA_BIN="$("$ROOT/tools/ollama/build.sh")" || die "building ollama failed"
  node_image ollama "$OLLAMA_BIN"
  start_kubelet "$1"
  start_node_services
  start_pod_routes "$1" "$2"
  wait_until kubelet node_ready
}

# Stops pods first (their processes live in the kubepods cgroups, not under a process we started),
# then the node's processes, then undoes mounts, network namespaces, the bridge and host settings.
node_down() {
  local s pids cg ns mp owned=1
  node_owned || owned=0
  for s in s3-relay apiserver-relay local-provisioner coredns kube-proxy kube-scheduler kubelet; do stop_pid "$s"; done
  # The kubepods cgroups, the netns list, the bridge and the host settings are the owner's.
  [[ $owned == 1 ]] || log "the node at $(cat "$NODE_OWNER") holds the bridge and host settings: left alone"
  if [[ $owned == 1 ]]; then
    for cg in /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/freezer/kubepods; do
      [[ -d $cg ]] || continue
      for _ in 1 2 3; do
        pids="$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)"
        [[ -z $pids ]] && break
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.3
      done
    done
  fi
  pids="$(pgrep -f "containerd-shim.*-address $STATE/containerd/containerd.sock" || true)"
  # shellcheck disable=SC2086
  [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
  stop_pid containerd
  # Mounts under the state dir (secret/projected tmpfs, overlay rootfs, netns), deepest first.
  awk -v p="$STATE/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r mp; do
    umount -l "$mp" 2>/dev/null || true
  done
  if [[ $owned == 1 && -f $STATE/node/host/netns ]]; then
    for ns in $(ls /var/run/netns 2>/dev/null); do
      [[ $ns == cni-* ]] && ! grep -qx "$ns" "$STATE/node/host/netns" && ip netns del "$ns" 2>/dev/null
    done
  fi
  [[ $owned == 1 ]] || return 0
  for cg in /sys/fs/cgroup/*/kubepods; do
    [[ -d $cg ]] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  teardown_pod_network
  restore_host_settings
  rm -f "$NODE_OWNER"
}

node_status() {
  local s pid
  for s in "${NODE_SERVICES[@]}"; do
    pid="$(pid_of "$s" 2>/dev/null || true)"
    if alive "$s"; then printf '%-24s running  pid %s\n' "$s" "$pid"
    elif [[ -n $pid ]]; then printf '%-24s DEAD     pid %s (log: %s)\n' "$s" "$pid" "$(log_path "$s")"
    else printf '%-24s stopped\n' "$s"; fi
  done
  if [[ -f $STATE/kubeconfig ]] && alive kubelet; then
    "$KBIN/kubectl" --kubeconfig "$STATE/kubeconfig" get node -o wide 2>/dev/null | sed 's/^/  /'
  fi
}
