#!/usr/bin/env bash
# Starts a throwaway Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager; no kubelet) on spare ports and keeps it running
# until this script is signalled or its parent process exits.
#
# usage: start.sh STATE_DIR
# Writes, in STATE_DIR:
#   kubeconfig         admin (system:masters) kubeconfig, TLS verification off
#   user-token         bearer token of the plain user "parley-operator-test"
#                      (no groups beyond system:authenticated; bind RBAC to it)
#   admin-token        bearer token of the admin
#   server             https://127.0.0.1:PORT
#   ready              created once /readyz answers ok
#   *.log              logs of each process
#   audit.log          audit events of requests on Secrets (JSON lines)
#   *.pid              process id of etcd, apiserver and controller-manager
#                      (tests freeze or kill the API server through it)
set -euo pipefail

STATE="${1:?usage: start.sh STATE_DIR}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PARENT="${PPID}"
mkdir -p "${STATE}"
STATE="$(cd "${STATE}" && pwd)"

BIN="$("${HERE}/ensure.sh" | tail -n 1)"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        # a test may have frozen it (SIGSTOP): wake it so SIGTERM lands
        kill -CONT "${pid}" 2>/dev/null || true
        kill "${pid}" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "${pid}" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 0' TERM INT HUP

ETCD_PORT="$(free_port)"
ETCD_PEER_PORT="$(free_port)"
API_PORT="$(free_port)"

openssl genrsa -out "${STATE}/sa.key" 2048 2>/dev/null
openssl rsa -in "${STATE}/sa.key" -pubout -out "${STATE}/sa.pub" 2>/dev/null
ADMIN_TOKEN="$(openssl rand -hex 24)"
USER_TOKEN="$(openssl rand -hex 24)"
printf '%s\n' "${ADMIN_TOKEN}" >"${STATE}/admin-token"
printf '%s\n' "${USER_TOKEN}" >"${STATE}/user-token"
{
    printf '%s,admin,admin,system:masters\n' "${ADMIN_TOKEN}"
    printf '%s,parley-operator-test,parley-operator-test\n' "${USER_TOKEN}"
} >"${STATE}/tokens.csv"
SERVER="https://127.0.0.1:${API_PORT}"
# Requests on Secrets are audited (tests check which Secrets the operator
# reads, watches and writes, and that its lists ask for metadata only): lists
# with their answers, everything else by name and verb alone.
cat >"${STATE}/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: RequestResponse
    verbs: ["list"]
    resources: [{group: "", resources: ["secrets"]}]
  - level: Metadata
    resources: [{group: "", resources: ["secrets"]}]
  - level: None
POLICY
printf '%s\n' "${SERVER}" >"${STATE}/server"
cat >"${STATE}/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: parley-test
  cluster:
    server: ${SERVER}
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: ${ADMIN_TOKEN}
contexts:
- name: parley-test
  context:
    cluster: parley-test
    user: admin
    namespace: default
current-context: parley-test
KUBECONFIG

"${BIN}/etcd" --data-dir "${STATE}/etcd" \
    --listen-client-urls "http://127.0.0.1:${ETCD_PORT}" \
    --advertise-client-urls "http://127.0.0.1:${ETCD_PORT}" \
    --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-cluster "default=http://127.0.0.1:${ETCD_PEER_PORT}" \
    --unsafe-no-fsync >"${STATE}/etcd.log" 2>&1 &
PIDS+=("$!")
printf '%s\n' "$!" >"${STATE}/etcd.pid"

"${BIN}/kube-apiserver" --etcd-servers="http://127.0.0.1:${ETCD_PORT}" \
    --secure-port="${API_PORT}" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --cert-dir="${STATE}/certs" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="${STATE}/sa.pub" \
    --service-account-signing-key-file="${STATE}/sa.key" \
    --authorization-mode=RBAC --token-auth-file="${STATE}/tokens.csv" \
    --enable-admission-plugins=OwnerReferencesPermissionEnforcement \
    --audit-policy-file="${STATE}/audit-policy.yaml" --audit-log-path="${STATE}/audit.log" \
    --service-cluster-ip-range=198.19.0.0/16 --allow-privileged=true \
    --insecure-port=0 >"${STATE}/apiserver.log" 2>&1 &
PIDS+=("$!")
printf '%s\n' "$!" >"${STATE}/apiserver.pid"

ready=0
for _ in $(seq 1 300); do
    if curl -fsk -H "Authorization: Bearer ${ADMIN_TOKEN}" "${SERVER}/readyz" >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.2
done
if [ "${ready}" -ne 1 ]; then
    echo "kube-apiserver did not become ready; see ${STATE}/apiserver.log" >&2
    tail -n 20 "${STATE}/apiserver.log" >&2 || true
    exit 1
fi

"${BIN}/kube-controller-manager" --kubeconfig="${STATE}/kubeconfig" \
    --service-account-private-key-file="${STATE}/sa.key" \
    --root-ca-file="${STATE}/certs/apiserver.crt" \
    --controllers='*,-nodeipam,-nodelifecycle' --leader-elect=false --port=0 --secure-port=0 \
    >"${STATE}/controller-manager.log" 2>&1 &
PIDS+=("$!")
printf '%s\n' "$!" >"${STATE}/controller-manager.pid"

touch "${STATE}/ready"
echo "control plane ready at ${SERVER} (state in ${STATE})" >&2

# Stay up while the parent lives; the EXIT trap stops everything.
while kill -0 "${PARENT}" 2>/dev/null; do
    for pid in "${PIDS[@]}"; do
        if ! kill -0 "${pid}" 2>/dev/null; then
            echo "control plane process ${pid} exited; see ${STATE}/*.log" >&2
            exit 1
        fi
    done
    sleep 1
done
