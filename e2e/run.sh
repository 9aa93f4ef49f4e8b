#!/usr/bin/env bash
# The whole stack in real pods, checked the way a platform team meets it. One
# scenario, two kinds of cluster:
#
#   e2e/run.sh local   a one-node cluster from Debian parts on this machine
#                      (e2e/node/node.sh): containerd, kubelet, kube-proxy, DNS
#   e2e/run.sh kind    a throwaway kind cluster (needs docker and kind)
#
# Only creating the cluster and loading the images differ. The images come
# from e2e/images/build.sh on both (no registry): the project's Dockerfile
# (runtime stage), Redis and RabbitMQ from Debian's packages, SecantusDB as
# the MongoDB-protocol server, and the SMTP sink. The steps, each printed with
# its time:
#
#   cluster, images       the cluster up, every image loaded
#   operator              the Helm chart installs the operator as a pod; CRD applied
#   sink                  SMTP sink and SecantusDB (MongoDB through spec.mongodb.external)
#   ready                 examples/minimal.yaml, patched to the local images, two
#                         chat pods, Ready
#   restricted            every pod of the ChatCluster runs non-root, read-only
#                         root, no capabilities, RuntimeDefault seccomp, and is Ready
#   scenario.pods         e2e/js/scenario.mjs, the two users on two chat pods
#   scenario.service      the same with the official client's default transports
#                         (long-polling, then upgrade) through the chat Service
#   pod.dies              a chat pod is deleted mid-conversation: clients reconnect
#                         and nothing acknowledged is missing (after=<seq>)
#   rolling.upgrade       spec.image.tag rolls between two tags under steady
#                         traffic: no acknowledged send fails, nothing is lost,
#                         every old chat pod drains on SIGTERM
#   config.leaves.stores  spec.log and the SMTP settings roll the services and
#                         leave the store pods running
#   fault.redis           the Redis pod dies: chat reports not ready, then
#                         delivers across pods again by itself
#   fault.rabbitmq        the RabbitMQ pod dies during logins: every /login got
#                         its code mailed or answered 503 (the user pods stay
#                         ready, degraded), then logins work again by themselves
#   scale                 chat 3 -> 1, the scenario on the one left
#   delete                the ChatCluster goes, its Deployments and its Delete
#                         volume with it, its Retain volume kept
#
# On failure: the cluster's state, events and logs. Settings (environment):
#   KEEP_CLUSTER=1   leave the cluster up at the end (local: e2e/node/node.sh down removes it)
#   E2E_NAMESPACE    namespace of the ChatCluster (default parley-e2e)
#   READY_TIMEOUT    seconds for the first Ready (default 600)
#   STEP_TIMEOUT     seconds for every later wait (default 300)
#   E2E_ONLY         space-separated step names to run after `ready` (default: all)
#   E2E_UP_ONLY=1    stop after `ready` and leave the cluster running, printing
#                    how to reach it (scripts/cluster up)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE="${1:-}"
case "${MODE}" in
local | kind) ;;
*)
    echo "usage: e2e/run.sh local|kind" >&2
    exit 2
    ;;
esac
NS="${E2E_NAMESPACE:-parley-e2e}"
READY_TIMEOUT="${READY_TIMEOUT:-600}"
STEP_TIMEOUT="${STEP_TIMEOUT:-300}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
OPERATOR_NS="parley-system"
OPERATOR_RELEASE="parley-operator"
CC="parley"
SINK="smtp-sink"
MONGO="mongodb"
# Set from the built image's digest: a rebuilt image gets new tags, so a
# reused cluster rolls onto it.
TAG_A=""
TAG_B=""
IMAGES="${PARLEY_IMAGES:-${PARLEY_HOME:-/var/tmp/parley}/images/out}"
KIND_CLUSTER="${KIND_CLUSTER_NAME:-parley-e2e}"

STARTED=$SECONDS
STEP_NAME=""
STEP_STARTED=$SECONDS
CLUSTER_UP=0
CREATED_CLUSTER=0
BG_PIDS=()
WORK="$(mktemp -d "${TMPDIR:-/tmp}/parley-e2e.XXXXXX")"
TIMINGS=()

log() { printf '[e2e %4ss] %s\n' "$((SECONDS - STARTED))" "$*" >&2; }
die() {
    printf '[e2e] error in step %s: %s\n' "${STEP_NAME:-setup}" "$*" >&2
    exit 1
}
kc() { kubectl -n "${NS}" "$@"; }

# step NAME: ends the running step (printing its time) and starts NAME.
step() {
    end_step
    STEP_NAME="$1"
    STEP_STARTED=$SECONDS
    log "== ${STEP_NAME}"
}
end_step() {
    if [ -n "${STEP_NAME}" ]; then
        TIMINGS+=("$(printf '%-22s %4ss' "${STEP_NAME}" "$((SECONDS - STEP_STARTED))")")
        log "== ${STEP_NAME} passed in $((SECONDS - STEP_STARTED))s"
        STEP_NAME=""
    fi
}
wanted() { [ -z "${E2E_ONLY:-}" ] || [[ " ${E2E_ONLY} " == *" $1 "* ]]; }

# wait_until DESCRIPTION SECONDS COMMAND...: polls COMMAND every second.
wait_until() {
    local what="$1" seconds="$2"
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ "${SECONDS}" -lt "${deadline}" ] || die "${what}: not reached within ${seconds}s"
        sleep 1
    done
}

# ------------------------------------------------------------------ the two kinds of cluster

cluster_up() {
    case "${MODE}" in
    local)
        "${ROOT}/e2e/node/node.sh" up
        export KUBECONFIG="${PARLEY_NODE_HOME:-${PARLEY_HOME:-/var/tmp/parley}/node}/kubeconfig"
        ;;
    kind)
        command -v kind >/dev/null || die "kind is not installed"
        docker info >/dev/null 2>&1 || die "the docker engine does not answer"
        export KUBECONFIG="${WORK}/kubeconfig"
        if [ "$(kind get clusters 2>/dev/null | grep -cx "${KIND_CLUSTER}")" -eq 0 ]; then
            CREATED_CLUSTER=1
            kind create cluster --name "${KIND_CLUSTER}" --kubeconfig "${KUBECONFIG}" --wait 180s
        fi
        kind get kubeconfig --name "${KIND_CLUSTER}" >"${KUBECONFIG}"
        ;;
    esac
    CLUSTER_UP=1
}

load_images() {
    local tar
    for tar in "$@"; do
        case "${MODE}" in
        local) "${ROOT}/e2e/node/node.sh" import "${tar}" ;;
        kind) kind load image-archive "${tar}" --name "${KIND_CLUSTER}" ;;
        esac
    done
}

cluster_down() {
    [ "${KEEP_CLUSTER}" = 1 ] && {
        log "cluster left running (KUBECONFIG=${KUBECONFIG:-})"
        return 0
    }
    case "${MODE}" in
    local) "${ROOT}/e2e/node/node.sh" down ;;
    kind) [ "${CREATED_CLUSTER}" = 1 ] && kind delete cluster --name "${KIND_CLUSTER}" ;;
    esac
}

# url_of svc|pod NAME PORT: a URL for a Service or a pod as the host reaches
# it. On the local node the host routes to pod and Service IPs (through
# kube-proxy, like a pod); on kind it is a port-forward (a Service's goes to
# one of its pods).
url_of() {
    local kind="$1" name="$2" port="$3" field
    case "${kind}" in
    svc) field='{.spec.clusterIP}' ;;
    pod) field='{.status.podIP}' ;;
    esac
    case "${MODE}" in
    local) printf 'http://%s:%s' "$(kc get "${kind}" "${name}" -o jsonpath="${field}")" "${port}" ;;
    kind) port_forward "${kind}/${name}" "${port}" ;;
    esac
}

# Runs in a command substitution: the forward's PID goes to a file the exit
# trap reads.
port_forward() {
    local target="$1" port="$2" pflog
    pflog="$(mktemp "${WORK}/pf.XXXXXX")"
    kubectl -n "${NS}" port-forward --address 127.0.0.1 "${target}" ":${port}" >"${pflog}" 2>&1 &
    echo "$!" >>"${WORK}/forward-pids"
    wait_until "port-forward to ${target}" 30 grep -q '^Forwarding from 127.0.0.1:' "${pflog}"
    printf 'http://127.0.0.1:%s' "$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "${pflog}" | head -n 1)"
}

# ------------------------------------------------------------------ clean-up and diagnostics

diagnostics() {
    local pod
    log "FAILED in step ${STEP_NAME:-setup}: state and logs follow"
    kubectl get nodes -o wide 2>&1 || true
    kc get chatcluster "${CC}" -o yaml 2>&1 | sed -n '/^status:/,$p' || true
    kc get deploy,statefulset,pods,svc,pvc -o wide 2>&1 || true
    kubectl get events -A --sort-by=.lastTimestamp 2>&1 | tail -n 60 || true
    for pod in $(kubectl -n "${OPERATOR_NS}" get pods -o name 2>/dev/null); do
        log "logs of ${pod}"
        kubectl -n "${OPERATOR_NS}" logs "${pod}" --tail=150 2>&1 || true
    done
    for pod in $(kc get pods -o name 2>/dev/null); do
        log "logs of ${pod}"
        kc logs "${pod}" --all-containers --tail=80 2>&1 || true
        kc logs "${pod}" --all-containers --previous --tail=30 2>/dev/null || true
    done
    if [ "${MODE}" = local ]; then
        log "kubelet log (last lines)"
        tail -n 40 "${PARLEY_NODE_HOME:-${PARLEY_HOME:-/var/tmp/parley}/node}/logs/kubelet.log" 2>&1 || true
    fi
}

on_exit() {
    local status=$?
    set +e
    local pid
    for pid in "${BG_PIDS[@]}" $(cat "${WORK}/forward-pids" 2>/dev/null); do
        kill "${pid}" 2>/dev/null
        wait "${pid}" 2>/dev/null
    done
    if [ "${status}" -ne 0 ] && [ "${CLUSTER_UP}" = 1 ]; then
        diagnostics
    fi
    if [ "${CLUSTER_UP}" = 1 ] || [ "${MODE}" = local ]; then
        cluster_down
    fi
    rm -rf "${WORK}"
    if [ "${status}" -eq 0 ]; then
        printf '[e2e] step timings:\n' >&2
        printf '  %s\n' "${TIMINGS[@]}" >&2
        log "e2e ${MODE}: all steps passed in $((SECONDS - STARTED))s"
    else
        printf '[e2e] FAILED (exit %s) in step %s after %ss\n' "${status}" "${STEP_NAME:-setup}" "$((SECONDS - STARTED))" >&2
    fi
    exit "${status}"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ helpers on the ChatCluster

pods_of() { kc get pods -l "app.kubernetes.io/instance=${CC},app.kubernetes.io/component=$1" -o json; }

# Names of the ready, not terminating pods of a component, one a line.
ready_pods() {
    pods_of "$1" | node -e '
      let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
        for (const p of JSON.parse(s).items) {
          const ready = (p.status.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
          if (ready && !p.metadata.deletionTimestamp) console.log(p.metadata.name);
        }
      });'
}

# component=uid lines of every store pod.
store_pod_uids() {
    local store
    for store in redis rabbitmq; do
        printf '%s=%s\n' "${store}" "$(kc get pod "${CC}-${store}-0" -o jsonpath='{.metadata.uid}')"
    done
}

observed_current() {
    local generation observed
    generation="$(kc get chatcluster "${CC}" -o jsonpath='{.metadata.generation}')"
    observed="$(kc get chatcluster "${CC}" -o jsonpath='{.status.observedGeneration}')"
    [ -n "${observed}" ] && [ "${observed}" = "${generation}" ]
}

# Ready for the current spec, and every service Deployment rolled out.
cluster_ready() {
    observed_current || return 1
    kc wait "chatcluster/${CC}" --for=condition=Ready --timeout=1s >/dev/null 2>&1 || return 1
    local c
    for c in user chat mail; do
        rolled_out "${CC}-${c}" || return 1
    done
}

rolled_out() {
    local d="$1" spec updated ready available total generation observed
    read -r generation observed spec updated ready available total < <(kc get deployment "${d}" -o \
        jsonpath='{.metadata.generation} {.status.observedGeneration} {.spec.replicas} {.status.updatedReplicas} {.status.readyReplicas} {.status.availableReplicas} {.status.replicas}')
    [ "${generation}" = "${observed}" ] && [ "${updated:-0}" = "${spec}" ] && [ "${ready:-0}" = "${spec}" ] &&
        [ "${available:-0}" = "${spec}" ] && [ "${total:-0}" = "${spec}" ]
}

patch_cc() { kc patch chatcluster "${CC}" --type merge -p "$1" >/dev/null; }

template_of() { kc get "$1" -o jsonpath='{.spec.template.metadata.annotations}'; }

# run_scenario LABEL CHAT_URLS [TRANSPORTS]
run_scenario() {
    log "scenario: $1"
    USER_URL="${USER_URL}" CHAT_URLS="$2" CODES_FROM="http:${SINK_URL}" STEP_TIMEOUT_MS=30000 \
        TRANSPORTS="${3:-websocket}" node "${ROOT}/e2e/js/scenario.mjs" >"${WORK}/scenario.out" 2>&1 ||
        {
            cat "${WORK}/scenario.out" >&2
            die "scenario ($1) failed; its last line names the step"
        }
    log "scenario: $(grep -c '"ok":true' "${WORK}/scenario.out") steps passed"
}

# continuity LABEL ACTION...: streams a conversation through the chat Service
# while ACTION runs, then checks that nothing acknowledged was lost.
continuity() {
    local label="$1" out="${WORK}/continuity.out" stop="${WORK}/continuity.stop" pid status=0
    shift
    rm -f "${stop}" "${out}"
    USER_URL="${USER_URL}" CHAT_URL="${CHAT_SVC_URL}" CODES_FROM="http:${SINK_URL}" STOP_FILE="${stop}" \
        RATE="${CONTINUITY_RATE:-20}" MIN_RECONNECTS="${MIN_RECONNECTS:-1}" node "${ROOT}/e2e/js/continuity.mjs" >"${out}" 2>&1 &
    pid=$!
    BG_PIDS+=("${pid}")
    wait_until "${label}: the conversation streaming" 120 grep -q "\"phase\":\"streaming\"" "${out}"
    # Some traffic before the disruption, some during, some after.
    sleep 3
    "$@"
    sleep 3
    touch "${stop}"
    wait "${pid}" || status=$?
    log "${label}: $(tail -n 1 "${out}")"
    [ "${status}" -eq 0 ] || {
        cat "${out}" >&2
        die "${label}: messages were lost or sends failed"
    }
}

# ------------------------------------------------------------------ 1. cluster and images

command -v node >/dev/null || die "node (Node.js 18+) is required for the client scenario"
if [ ! -d "${ROOT}/e2e/js/node_modules/socket.io-client" ]; then
    log "npm ci in e2e/js (the official socket.io-client)"
    (cd "${ROOT}/e2e/js" && npm ci --no-audit --no-fund >&2)
fi
step cluster
cluster_up
step images
PARLEY_IMAGE_TAG=e2e "${ROOT}/e2e/images/build.sh" >/dev/null
digest="$(sha256sum "${IMAGES}/parley.tar" | cut -c1-10)"
TAG_A="e2e-${digest}-a"
TAG_B="e2e-${digest}-b"
# The same image under two tags, the second for the rolling upgrade.
python3 - "${IMAGES}/parley.tar" localhost/parley:e2e "${WORK}/parley-a.tar" "localhost/parley:${TAG_A}" \
    "${WORK}/parley-b.tar" "localhost/parley:${TAG_B}" <<'PY'
import io, json, sys, tarfile
src, old, *pairs = sys.argv[1:]
for dst, new in zip(pairs[::2], pairs[1::2]):
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin:
            data = tin.extractfile(member) if member.isfile() else None
            if member.name == "manifest.json":
                manifest = json.load(data)
                for entry in manifest:
                    entry["RepoTags"] = [new if t == old else t for t in entry.get("RepoTags") or []]
                raw = json.dumps(manifest).encode()
                member.size = len(raw)
                data = io.BytesIO(raw)
            tout.addfile(member, data)
PY
load_images "${IMAGES}"/parley-{redis,rabbitmq,mongodb,smtp-sink}.tar "${WORK}/parley-a.tar" "${WORK}/parley-b.tar"

# ------------------------------------------------------------------ 2. operator

step operator
HELM="$("${ROOT}/scripts/lib/ensure-helm.sh" | tail -n 1)"
kubectl apply --server-side --force-conflicts -f "${ROOT}/crds/chatcluster.yaml" >/dev/null
crd_established() {
    [ "$(kubectl get crd chatclusters.parley.dev -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" = True ]
}
wait_until "the ChatCluster CRD established" 60 crd_established
"${HELM}" upgrade --install "${OPERATOR_RELEASE}" "${ROOT}/charts/parley-operator" \
    --namespace "${OPERATOR_NS}" --create-namespace \
    --set image.repository=localhost/parley --set image.tag="${TAG_A}" --set image.pullPolicy=Never \
    --set replicaCount=1 --wait --timeout "${STEP_TIMEOUT}s" >/dev/null
kubectl -n "${OPERATOR_NS}" get pods -o wide

# ------------------------------------------------------------------ 3. SMTP sink and MongoDB

step sink
kubectl create namespace "${NS}" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kc apply -f "${ROOT}/e2e/manifests/smtp-sink.yaml" -f "${ROOT}/e2e/manifests/mongodb.yaml" >/dev/null
kc rollout status "deployment/${SINK}" --timeout="${STEP_TIMEOUT}s"
kc rollout status "deployment/${MONGO}" --timeout="${STEP_TIMEOUT}s"
SINK_URL="$(url_of svc "${SINK}" 8025)"
wait_until "the sink's HTTP API at ${SINK_URL}" 60 curl -fsS "${SINK_URL}/healthz"

# ------------------------------------------------------------------ 4. the ChatCluster

step ready
# Only what differs in a test cluster: the local images, the sink as SMTP
# server, SecantusDB as external MongoDB, two chat pods, and login limits
# that let one client address (this host) log in the scenario's users, and
# Redis's volume deleted with the cluster (the step delete checks it).
# The example as a user starts from it, with the changes applied before it
# reaches the cluster (a first apply with images that cannot be pulled would
# leave a StatefulSet waiting on a pod that never becomes ready).
kubectl patch --local -f "${ROOT}/examples/minimal.yaml" --type merge -o yaml -p "$(
    cat <<JSON
{"spec": {
  "image": {"repository": "localhost/parley", "tag": "${TAG_A}", "pullPolicy": "Never"},
  "smtp": {"host": "${SINK}", "port": 1025, "tls": "none"},
  "chat": {"replicas": 2},
  "user": {"env": [{"name": "PARLEY_LOGIN_PER_IP_PER_HOUR", "value": "100000"}]},
  "redis": {"managed": {"image": "localhost/parley-redis:7", "volumeReclaim": "Delete"}},
  "rabbitmq": {"managed": {"image": "localhost/parley-rabbitmq:3"}},
  "mongodb": {"managed": null, "external": {"urlSecret": {"name": "${MONGO}-url", "key": "url"}}}
}}
JSON
)" | kc apply -f - >/dev/null
wait_until "ChatCluster ${CC} Ready" "${READY_TIMEOUT}" cluster_ready
kc get chatcluster "${CC}"
kc get pods -o wide
USER_URL="$(url_of svc "${CC}-user" 8080)"
CHAT_SVC_URL="$(url_of svc "${CC}-chat" 8080)"
if [ "${E2E_UP_ONLY:-0}" = 1 ]; then
    end_step
    KEEP_CLUSTER=1
    cat >&2 <<EOF

parley is running: ChatCluster ${CC} in namespace ${NS} is Ready.
  export KUBECONFIG=${KUBECONFIG}
  kubectl -n ${NS} get chatcluster ${CC}
  user API   ${USER_URL}/api/v1/...   (readiness: ${USER_URL}/readyz)
  chat API   ${CHAT_SVC_URL}/api/v1/...   Socket.IO: ${CHAT_SVC_URL}/socket.io/
  mail sink  ${SINK_URL}/latest?to=ADDRESS   (login codes)
Remove it all with: scripts/cluster down
EOF
    exit 0
fi

# ------------------------------------------------------------------ 5. what only real pods show

restricted_violations() {
    # shellcheck disable=SC2016 # JavaScript, not shell
    kc get pods -l "app.kubernetes.io/instance=${CC}" -o json | node -e '
      let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
        const bad = [];
        for (const p of JSON.parse(s).items) {
          const ps = p.spec.securityContext ?? {};
          for (const c of [...(p.spec.initContainers ?? []), ...p.spec.containers]) {
            const cs = c.securityContext ?? {};
            const name = `${p.metadata.name}/${c.name}`;
            if (!(cs.runAsNonRoot ?? ps.runAsNonRoot)) bad.push(`${name}: runAsNonRoot not set`);
            if (cs.readOnlyRootFilesystem !== true) bad.push(`${name}: root file system writable`);
            if (cs.allowPrivilegeEscalation !== false) bad.push(`${name}: privilege escalation allowed`);
            if (!(cs.capabilities?.drop ?? []).includes("ALL")) bad.push(`${name}: capabilities not dropped`);
            const seccomp = cs.seccompProfile?.type ?? ps.seccompProfile?.type;
            if (seccomp !== "RuntimeDefault") bad.push(`${name}: seccomp ${seccomp}`);
          }
          const ready = (p.status.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
          if (!ready) bad.push(`${p.metadata.name}: not ready`);
        }
        console.log(bad.join("\n"));
      });'
}
if wanted restricted; then
    step restricted
    violations="$(restricted_violations)"
    [ -z "${violations}" ] || die "pods are not restricted or not ready:
${violations}"
    log "$(kc get pods -l "app.kubernetes.io/instance=${CC}" -o name | wc -l) pods restricted and ready"
fi

if wanted scenario.pods; then
    step scenario.pods
    mapfile -t CHAT_PODS < <(ready_pods chat)
    [ "${#CHAT_PODS[@]}" -ge 2 ] || die "expected 2 ready chat pods, found ${#CHAT_PODS[@]}"
    run_scenario "A on ${CHAT_PODS[0]}, B on ${CHAT_PODS[1]}" \
        "$(url_of pod "${CHAT_PODS[0]}" 8080),$(url_of pod "${CHAT_PODS[1]}" 8080)"
fi

if wanted scenario.service; then
    step scenario.service
    [ "$(kc get svc "${CC}-chat" -o jsonpath='{.spec.sessionAffinity}')" = ClientIP ] ||
        die "the chat Service has no session affinity: long-polling clients break across pods"
    run_scenario "default transports through the chat Service (two pods)" "${CHAT_SVC_URL}" default
fi

if wanted pod.dies; then
    step pod.dies
    # Every chat pod of the moment dies in turn, so the pod the clients sit
    # on is among them (affinity decides which one that is).
    delete_the_chat_pods() {
        local victim
        for victim in $(ready_pods chat); do
            log "deleting chat pod ${victim} mid-conversation"
            kc delete pod "${victim}" --wait=false >/dev/null
            wait_until "chat back to its ready pods" "${STEP_TIMEOUT}" rolled_out "${CC}-chat"
        done
    }
    MIN_RECONNECTS=1 continuity "pod.dies" delete_the_chat_pods
fi

if wanted rolling.upgrade; then
    step rolling.upgrade
    roll_image() {
        local pod
        # Follow the old chat pods' logs to see each drain on SIGTERM.
        for pod in $(ready_pods chat); do
            kubectl -n "${NS}" logs -f "${pod}" >"${WORK}/old-${pod}.log" 2>&1 &
            BG_PIDS+=("$!")
        done
        log "rolling spec.image.tag ${TAG_A} -> ${TAG_B}"
        patch_cc "{\"spec\": {\"image\": {\"tag\": \"${TAG_B}\"}}}"
        wait_until "the rollout to ${TAG_B}" "${STEP_TIMEOUT}" cluster_ready
        [ "$(kc get deployment "${CC}-chat" -o jsonpath='{.spec.template.spec.containers[0].image}')" = "localhost/parley:${TAG_B}" ] ||
            die "chat does not run ${TAG_B}"
    }
    continuity "rolling.upgrade" roll_image
    for f in "${WORK}"/old-*.log; do
        grep -q 'shutdown requested; draining' "${f}" || {
            tail -n 20 "${f}" >&2
            die "$(basename "${f}" .log): no drain on SIGTERM in its log"
        }
    done
    log "every old chat pod drained on SIGTERM"
fi

if wanted config.leaves.stores; then
    step config.leaves.stores
    before="$(store_pod_uids)"
    user_template="$(template_of "deployment/${CC}-user")"
    patch_cc '{"spec": {"log": "debug"}}'
    wait_until "the services rolled for spec.log" "${STEP_TIMEOUT}" \
        bash -c "[ \"\$(kubectl -n ${NS} get deployment/${CC}-user -o jsonpath='{.spec.template.metadata.annotations}')\" != '${user_template}' ]"
    wait_until "Ready after spec.log" "${STEP_TIMEOUT}" cluster_ready
    user_template="$(template_of "deployment/${CC}-mail")"
    patch_cc "{\"spec\": {\"smtp\": {\"from\": \"e2e-$(date +%s)@example.com\"}}}"
    wait_until "mail rolled for the SMTP settings" "${STEP_TIMEOUT}" \
        bash -c "[ \"\$(kubectl -n ${NS} get deployment/${CC}-mail -o jsonpath='{.spec.template.metadata.annotations}')\" != '${user_template}' ]"
    wait_until "Ready after the SMTP change" "${STEP_TIMEOUT}" cluster_ready
    after="$(store_pod_uids)"
    [ "${before}" = "${after}" ] || die "store pods were restarted by a service setting: ${before//$'\n'/ } -> ${after//$'\n'/ }"
    log "store pods unchanged: ${after//$'\n'/ }"
fi

if wanted fault.redis; then
    step fault.redis
    chat_pod="$(ready_pods chat | head -n 1)"
    readyz() { kubectl get --raw "/api/v1/namespaces/${NS}/pods/${chat_pod}:8080/proxy/readyz" >/dev/null 2>&1; }
    not_ready() { ! readyz; }
    readyz || die "${chat_pod} is not ready before the fault"
    log "deleting the Redis pod"
    kc delete pod "${CC}-redis-0" --wait=false >/dev/null
    wait_until "${chat_pod} reporting not ready without Redis" 60 not_ready
    metric="$(kubectl get --raw "/api/v1/namespaces/${NS}/pods/${chat_pod}:8080/proxy/metrics" 2>/dev/null |
        grep -E '^dependency_up\{dependency="redis"\}' || true)"
    [ "${metric##* }" = 0 ] || die "chat's /metrics does not show Redis down: '${metric}'"
    log "while Redis is down: /readyz 503 and ${metric}"
    wait_until "${chat_pod} ready again by itself" "${STEP_TIMEOUT}" readyz
    wait_until "Ready after the Redis fault" "${STEP_TIMEOUT}" cluster_ready
    mapfile -t CHAT_PODS < <(ready_pods chat)
    run_scenario "cross-pod delivery after Redis came back" \
        "$(url_of pod "${CHAT_PODS[0]}" 8080),$(url_of pod "${CHAT_PODS[1]}" 8080)"
fi

if wanted fault.rabbitmq; then
    step fault.rabbitmq
    rabbit_uid="$(kc get pod "${CC}-rabbitmq-0" -o jsonpath='{.metadata.uid}')"
    kill_rabbit() {
        sleep 2
        log "deleting the RabbitMQ pod during logins"
        kc delete pod "${CC}-rabbitmq-0" --wait=false >/dev/null
    }
    kill_rabbit &
    BG_PIDS+=("$!")
    USER_URL="${USER_URL}" CODES_FROM="http:${SINK_URL}" DURATION_MS="${LOGIN_FAULT_MS:-25000}" \
        node "${ROOT}/e2e/js/logins.mjs" >"${WORK}/logins.out" 2>&1 || {
        cat "${WORK}/logins.out" >&2
        die "a /login answered neither 200-with-mail nor 503"
    }
    log "logins: $(tail -n 1 "${WORK}/logins.out")"
    # The old pod may still be terminating (RabbitMQ stops slowly): wait for
    # its replacement.
    rabbit_replaced() {
        local uid
        uid="$(kc get pod "${CC}-rabbitmq-0" -o jsonpath='{.metadata.uid}')"
        [ -n "${uid}" ] && [ "${uid}" != "${rabbit_uid}" ]
    }
    wait_until "the RabbitMQ pod replaced" "${STEP_TIMEOUT}" rabbit_replaced
    wait_until "Ready after the RabbitMQ fault" "${STEP_TIMEOUT}" cluster_ready
    # The user pods stayed ready through the outage (RabbitMQ only degrades
    # them); each reconnects on its own schedule: wait until none is degraded.
    users_whole() {
        local pod body
        for pod in $(ready_pods user); do
            body="$(kubectl get --raw "/api/v1/namespaces/${NS}/pods/${pod}:8080/proxy/readyz" 2>/dev/null)" || return 1
            [[ "${body}" == *'"degraded":[]'* ]] || return 1
        done
    }
    wait_until "the user pods no longer degraded" "${STEP_TIMEOUT}" users_whole
    # And logins work again by themselves.
    USER_URL="${USER_URL}" CODES_FROM="http:${SINK_URL}" DURATION_MS=3000 ONLY_ACCEPTED=1 \
        node "${ROOT}/e2e/js/logins.mjs" >"${WORK}/logins.out" 2>&1 || {
        cat "${WORK}/logins.out" >&2
        die "logins did not recover after RabbitMQ came back"
    }
    log "logins after the fault: $(tail -n 1 "${WORK}/logins.out")"
fi

step scale
for replicas in 3 1; do
    log "chat to ${replicas} replicas through spec.chat.replicas"
    patch_cc "{\"spec\": {\"chat\": {\"replicas\": ${replicas}}}}"
    chat_count_is() {
        [ "$(kc get pods -l "app.kubernetes.io/instance=${CC},app.kubernetes.io/component=chat" -o name | wc -l)" -eq "$1" ] &&
            [ "$(kc get chatcluster "${CC}" -o jsonpath='{.status.components.chat.readyReplicas}')" = "$1" ]
    }
    wait_until "${replicas} chat pods" "${STEP_TIMEOUT}" chat_count_is "${replicas}"
    wait_until "Ready with ${replicas} chat pods" "${STEP_TIMEOUT}" cluster_ready
done
mapfile -t CHAT_PODS < <(ready_pods chat)
run_scenario "both users on ${CHAT_PODS[0]}, the one chat pod" "$(url_of pod "${CHAT_PODS[0]}" 8080)"

step delete
kc delete chatcluster "${CC}" --wait=true --timeout="${STEP_TIMEOUT}s" >/dev/null
deployments_gone() { [ -z "$(kc get deployment "${CC}-user" "${CC}-chat" "${CC}-mail" --ignore-not-found -o name)" ]; }
wait_until "the Deployments of ${CC} deleted" "${STEP_TIMEOUT}" deployments_gone
# The ChatCluster went only after the volumes of its Delete stores did
# (finalizer parley.dev/delete-volumes): no wait here.
if [ -n "$(kc get pvc "data-${CC}-redis-0" --ignore-not-found -o name)" ]; then
    kc get pvc -o wide >&2
    die "the claim data-${CC}-redis-0 (volumeReclaim Delete) outlived its ChatCluster"
fi
[ -n "$(kc get pvc "data-${CC}-rabbitmq-0" --ignore-not-found -o name)" ] ||
    die "the claim data-${CC}-rabbitmq-0 (volumeReclaim Retain) was deleted"
end_step
