#!/usr/bin/env bash
# The whole stack on a throwaway kind cluster, checked the way a user meets it:
#
#   1. build the repo's image and load it into a new kind cluster;
#   2. install the operator with its Helm chart (charts/parley-operator);
#   3. start an SMTP sink (Mailpit, e2e/manifests/smtp-sink.yaml);
#   4. apply examples/minimal.yaml, point it at the local image and the sink,
#      and wait for the ChatCluster to be Ready;
#   5. play e2e/js/scenario.mjs (two users logging in by mailed code, a 1:1
#      chat, presence, typing, messages, receipts) through port-forwards, the
#      two users on two different chat pods;
#   6. scale chat to 3 replicas and down to 1 (and play the scenario again);
#   7. delete the ChatCluster and wait until its Deployments are gone;
#   8. delete the cluster (also when a step failed, after printing the
#      operator's and services' logs).
#
# Needs: docker (with a running engine), kind, kubectl, helm, node >= 18 and
# npm, git. Run from anywhere: e2e/kind.sh
#
# Settings (environment):
#   KIND_CLUSTER_NAME  cluster name (default parley-e2e; kind's own variable)
#   REUSE_CLUSTER=1    use the cluster of that name if it exists, instead of
#                      stopping; a reused cluster is never deleted
#   KEEP_CLUSTER=1     leave the cluster running at the end, to look around
#   KIND_NODE_IMAGE    node image for `kind create cluster --image` (kind's default otherwise)
#   E2E_NAMESPACE      namespace of the ChatCluster and the sink (default default)
#   IMAGE_REPOSITORY / IMAGE_TAG   name of the image built here (default parley:e2e)
#   READY_TIMEOUT      seconds to wait for the first Ready, image pulls of the
#                      stores included (default 900)
#   STEP_TIMEOUT       seconds for every later wait (default 300)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER_NAME:-parley-e2e}"
REUSE_CLUSTER="${REUSE_CLUSTER:-0}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-}"
NS="${E2E_NAMESPACE:-default}"
IMAGE_REPOSITORY="${IMAGE_REPOSITORY:-parley}"
IMAGE_TAG="${IMAGE_TAG:-e2e}"
IMAGE="${IMAGE_REPOSITORY}:${IMAGE_TAG}"
READY_TIMEOUT="${READY_TIMEOUT:-900}"
STEP_TIMEOUT="${STEP_TIMEOUT:-300}"
# Fixed by the files this script uses: the chart installs into this
# namespace, examples/minimal.yaml names its ChatCluster `parley`, the
# operator names the children `<cluster>-user|chat|mail`, and the sink's
# Service is `mailpit`.
OPERATOR_NS="parley-system"
OPERATOR_RELEASE="parley-operator"
CC="parley"
SINK="mailpit"

STARTED=$SECONDS
CREATED_CLUSTER=0 # set once this run created the cluster: only then is it deleted
CLUSTER_READY=0   # set once kubectl can reach it: only then are logs collected
PF_PIDS=()        # port-forwards this run started, stopped by the trap
WORK="$(mktemp -d "${TMPDIR:-/tmp}/parley-kind.XXXXXX")"
# A kubeconfig of our own: every kubectl and helm call below talks to the kind
# cluster, never to whatever the user's current context points at.
export KUBECONFIG="$WORK/kubeconfig"

log() { printf '\n[kind-e2e %4ss] %s\n' "$((SECONDS - STARTED))" "$*" >&2; }
die() { printf '\n[kind-e2e] error: %s\n' "$*" >&2; exit 1; }
kc() { kubectl -n "$NS" "$@"; }

# wait_until DESCRIPTION SECONDS COMMAND...: runs COMMAND every 2 s until it
# succeeds; fails naming DESCRIPTION after SECONDS.
wait_until() {
  local what="$1" seconds="$2"
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "$what: not reached within ${seconds}s"
    fi
    sleep 2
  done
}

# ------------------------------------------------------------ cleanup

stop_port_forwards() {
  local pid
  for pid in "${PF_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PF_PIDS=()
}

# On failure: what a first look needs, the state and the logs.
diagnostics() {
  local pod
  log "FAILED: state of the cluster and logs follow"
  kubectl get chatcluster -A -o yaml 2>&1 || true
  kc get deploy,statefulset,pods,svc,pvc -o wide 2>&1 || true
  kc get events --sort-by=.lastTimestamp 2>&1 | tail -n 60 || true
  kubectl -n "$OPERATOR_NS" get pods -o wide 2>&1 || true
  for pod in $(kubectl -n "$OPERATOR_NS" get pods -o name 2>/dev/null); do
    log "logs of the operator: $pod"
    kubectl -n "$OPERATOR_NS" logs "$pod" --all-containers --tail=300 2>&1 || true
  done
  for pod in $(kc get pods -l "app.kubernetes.io/instance=$CC" -o name 2>/dev/null); do
    log "logs of $pod"
    kc logs "$pod" --all-containers --tail=200 2>&1 || true
    # A container that crashed and restarted keeps the reason in its previous run.
    kc logs "$pod" --all-containers --previous --tail=50 2>/dev/null || true
  done
  for pod in $(kc get pods -l "app.kubernetes.io/name=$SINK" -o name 2>/dev/null); do
    log "logs of $pod"
    kc logs "$pod" --tail=50 2>&1 || true
  done
  for pf in "$WORK"/pf-*.log; do
    [ -e "$pf" ] || continue
    log "port-forward log $(basename "$pf")"
    cat "$pf" >&2
  done
}

on_exit() {
  local status=$?
  set +e
  stop_port_forwards
  if [ "$status" -ne 0 ] && [ "$CLUSTER_READY" = 1 ]; then
    diagnostics
  fi
  if [ "$CREATED_CLUSTER" = 1 ] && [ "$KEEP_CLUSTER" != 1 ]; then
    log "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" >&2
  elif [ "$CLUSTER_READY" = 1 ]; then
    log "cluster $CLUSTER left running; use it with: kind export kubeconfig --name $CLUSTER"
  fi
  rm -rf "$WORK"
  if [ "$status" -eq 0 ]; then
    log "all passed in $((SECONDS - STARTED))s"
  else
    printf '[kind-e2e] FAILED (exit %s) after %ss\n' "$status" "$((SECONDS - STARTED))" >&2
  fi
  exit "$status"
}
trap on_exit EXIT
# Ctrl-C and kill still go through on_exit (and so delete the cluster).
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------ 0. tools

missing=()
need() {
  command -v "$1" >/dev/null 2>&1 || missing+=("  $1: $2")
}
need docker "https://docs.docker.com/engine/install/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/"
need node "Node.js 18 or newer, https://nodejs.org/en/download"
need npm "comes with Node.js"
need git "your package manager's git"
if [ "${#missing[@]}" -gt 0 ]; then
  printf '[kind-e2e] missing tools (install them, then run again):\n' >&2
  printf '%s\n' "${missing[@]}" >&2
  exit 1
fi
docker info >/dev/null 2>&1 \
  || die "docker is installed but its engine does not answer: start the daemon, and check that $(id -un) may use it (docker info)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' \
  || die "node $(node --version) is too old: scenario.mjs needs Node.js 18 or newer (global fetch)"
[ -f "$ROOT/charts/parley-operator/Chart.yaml" ] || die "no Helm chart at $ROOT/charts/parley-operator"
[ -f "$ROOT/examples/minimal.yaml" ] || die "no example ChatCluster at $ROOT/examples/minimal.yaml"

# ------------------------------------------------------------ 1. cluster and image

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  [ "$REUSE_CLUSTER" = 1 ] \
    || die "a kind cluster named $CLUSTER exists already: delete it (kind delete cluster --name $CLUSTER), reuse it (REUSE_CLUSTER=1) or pick another name (KIND_CLUSTER_NAME=...)"
  log "reusing kind cluster $CLUSTER"
else
  log "creating kind cluster $CLUSTER"
  # Marked before creating: a half-created cluster is deleted too.
  CREATED_CLUSTER=1
  kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 180s \
    ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
kubectl cluster-info >/dev/null || die "kind cluster $CLUSTER does not answer"
CLUSTER_READY=1

VERSION="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo dev)"
log "building $IMAGE (version $VERSION); the first build compiles everything in release mode and takes a while"
REVISION="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
docker build --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" -t "$IMAGE" "$ROOT"
log "loading $IMAGE into the cluster's nodes (no registry involved)"
kind load docker-image "$IMAGE" --name "$CLUSTER"

# ------------------------------------------------------------ 2. operator

log "installing the operator chart into $OPERATOR_NS"
# pullPolicy Never: the image exists only inside the nodes, loaded above; a
# typo then shows as ErrImageNeverPull instead of a pull from Docker Hub.
# One operator pod is enough here (the chart's default is two, one standing by).
helm upgrade --install "$OPERATOR_RELEASE" "$ROOT/charts/parley-operator" \
  --namespace "$OPERATOR_NS" --create-namespace \
  --set image.repository="$IMAGE_REPOSITORY" \
  --set image.tag="$IMAGE_TAG" \
  --set image.pullPolicy=Never \
  --set replicaCount=1 \
  --wait --timeout "${STEP_TIMEOUT}s"
# The chart carries the CRD in crds/, which Helm installs once and never
# upgrades: in a reused cluster it may be an older one. Apply this
# checkout's (generated, and checked current by a test) over it either way.
kubectl apply --server-side --force-conflicts -f "$ROOT/crds/chatcluster.yaml"
kubectl wait crd/chatclusters.parley.dev --for=condition=Established --timeout="${STEP_TIMEOUT}s"

# ------------------------------------------------------------ 3. SMTP sink

if [ "$NS" != default ]; then
  kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
fi
log "starting the SMTP sink (Mailpit) in $NS"
kc apply -f "$ROOT/e2e/manifests/smtp-sink.yaml"
kc rollout status "deployment/$SINK" --timeout="${STEP_TIMEOUT}s"

# ------------------------------------------------------------ 4. the ChatCluster

log "applying examples/minimal.yaml, then pointing it at $IMAGE and the sink"
kc apply -f "$ROOT/examples/minimal.yaml"
# The example is what a user starts from; only what differs in a test
# cluster changes here: the local image, the sink as SMTP server, and two
# chat replicas so the users of the scenario sit on different pods.
kc patch chatcluster "$CC" --type merge -p "$(cat <<JSON
{"spec": {
  "image": {"repository": "$IMAGE_REPOSITORY", "tag": "$IMAGE_TAG", "pullPolicy": "Never"},
  "smtp": {"host": "$SINK", "port": 1025, "tls": "none"},
  "chat": {"replicas": 2}
}}
JSON
)"

# Ready must describe the patched spec, not the example as first applied.
observed_current() {
  local generation observed
  generation="$(kc get chatcluster "$CC" -o jsonpath='{.metadata.generation}')"
  observed="$(kc get chatcluster "$CC" -o jsonpath='{.status.observedGeneration}')"
  [ -n "$observed" ] && [ "$observed" = "$generation" ]
}
log "waiting for ChatCluster $CC to be Ready (store images are pulled now; up to ${READY_TIMEOUT}s)"
wait_until "the operator observing the patched ChatCluster" "$STEP_TIMEOUT" observed_current
kc wait "chatcluster/$CC" --for=condition=Ready --timeout="${READY_TIMEOUT}s"
kc get chatcluster "$CC"

# ------------------------------------------------------------ 5. the scenario

# port_forward NAME TARGET PORT: forwards a free local port to TARGET's PORT
# in the background; sets PF_PORT. kubectl picks the local port (":PORT"),
# so nothing on this machine can clash with it.
PF_PORT=""
port_forward() {
  local target="$2" port="$3" log="$WORK/pf-$1.log"
  # kubectl itself, not through kc: $! must be kubectl's pid for the trap to stop it.
  kubectl -n "$NS" port-forward --address 127.0.0.1 "$target" ":$port" >"$log" 2>&1 &
  PF_PIDS+=("$!")
  wait_until "port-forward to $target" 30 grep -q '^Forwarding from 127.0.0.1:' "$log"
  PF_PORT="$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$log" | head -n 1)"
  [ -n "$PF_PORT" ] || die "port-forward to $target: no local port in $log"
}

# Names of the chat pods that are Ready and not terminating, one a line.
ready_chat_pods() {
  kc get pods -l "app.kubernetes.io/instance=$CC,app.kubernetes.io/component=chat" -o json \
    | node -e '
      let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
        for (const p of JSON.parse(s).items) {
          const ready = (p.status.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
          if (ready && !p.metadata.deletionTimestamp) console.log(p.metadata.name);
        }
      });'
}

if [ ! -d "$ROOT/e2e/js/node_modules/socket.io-client" ]; then
  log "installing the scenario's npm packages (npm ci in e2e/js)"
  (cd "$ROOT/e2e/js" && npm ci --no-audit --no-fund)
fi

# run_scenario LABEL CHAT_URLS: plays scenario.mjs against the forwarded
# user service and Mailpit, its JSON step lines going to the terminal.
run_scenario() {
  log "scenario: $1"
  USER_URL="http://127.0.0.1:$USER_PORT" CHAT_URLS="$2" \
    CODES_FROM="mailpit:http://127.0.0.1:$MAILPIT_PORT" STEP_TIMEOUT_MS=30000 \
    node "$ROOT/e2e/js/scenario.mjs" || die "scenario ($1) failed; its last line names the step"
}

port_forward user "svc/$CC-user" 8080
USER_PORT="$PF_PORT"
port_forward mailpit "svc/$SINK" 8025
MAILPIT_PORT="$PF_PORT"
# Each chat pod on its own port (a Service would pick one pod per
# connection): user A talks to the first pod, user B to the second, so
# messages, presence and receipts must cross replicas through Redis.
mapfile -t CHAT_PODS < <(ready_chat_pods)
[ "${#CHAT_PODS[@]}" -ge 2 ] || die "expected 2 ready chat pods, found ${#CHAT_PODS[@]}: ${CHAT_PODS[*]:-none}"
port_forward chat-a "pod/${CHAT_PODS[0]}" 8080
CHAT_A_PORT="$PF_PORT"
port_forward chat-b "pod/${CHAT_PODS[1]}" 8080
CHAT_B_PORT="$PF_PORT"
run_scenario "A on ${CHAT_PODS[0]}, B on ${CHAT_PODS[1]}" \
  "http://127.0.0.1:$CHAT_A_PORT,http://127.0.0.1:$CHAT_B_PORT"
# The pods behind these forwards go away when scaling; stop forwarding first.
stop_port_forwards

# ------------------------------------------------------------ 6. scaling

# chat_replicas_are N: the ChatCluster's status and the Deployment both say
# exactly N ready chat pods, and exactly N pods exist (terminating ones
# included: after scaling down, none is left that a client could reach).
chat_replicas_are() {
  local want="$1" reported ready pods
  reported="$(kc get chatcluster "$CC" -o jsonpath='{.status.components.chat.readyReplicas}')"
  ready="$(kc get deployment "$CC-chat" -o jsonpath='{.status.readyReplicas}')"
  pods="$(kc get pods -l "app.kubernetes.io/instance=$CC,app.kubernetes.io/component=chat" -o name | wc -l)"
  [ "${reported:-0}" = "$want" ] && [ "${ready:-0}" = "$want" ] && [ "$pods" -eq "$want" ]
}

for replicas in 3 1; do
  log "scaling chat to $replicas through spec.chat.replicas"
  kc patch chatcluster "$CC" --type merge -p "{\"spec\": {\"chat\": {\"replicas\": $replicas}}}"
  wait_until "$replicas ready chat replicas" "$STEP_TIMEOUT" chat_replicas_are "$replicas"
  kc wait "chatcluster/$CC" --for=condition=Ready --timeout="${STEP_TIMEOUT}s"
  kc get deployment "$CC-chat"
done

# What is left still works: both users now on the single chat pod.
mapfile -t CHAT_PODS < <(ready_chat_pods)
[ "${#CHAT_PODS[@]}" -eq 1 ] || die "expected 1 ready chat pod, found ${#CHAT_PODS[@]}: ${CHAT_PODS[*]:-none}"
port_forward user "svc/$CC-user" 8080
USER_PORT="$PF_PORT"
port_forward mailpit "svc/$SINK" 8025
MAILPIT_PORT="$PF_PORT"
port_forward chat "pod/${CHAT_PODS[0]}" 8080
run_scenario "both users on ${CHAT_PODS[0]}, the one chat replica" "http://127.0.0.1:$PF_PORT"
stop_port_forwards

# ------------------------------------------------------------ 7. deletion

log "deleting ChatCluster $CC; its children go by owner reference"
kc delete chatcluster "$CC" --wait=true --timeout="${STEP_TIMEOUT}s"
deployments_gone() {
  [ -z "$(kc get deployment "$CC-user" "$CC-chat" "$CC-mail" --ignore-not-found -o name)" ]
}
wait_until "Deployments $CC-user, $CC-chat and $CC-mail deleted" "$STEP_TIMEOUT" deployments_gone
# Store volumes outlive their ChatCluster by default (volumeReclaim Retain);
# a test throws them away, so a reused cluster starts the next run clean.
kc delete pvc -l "app.kubernetes.io/instance=$CC" --ignore-not-found --wait=false

# ------------------------------------------------------------ 8. done (the trap deletes the cluster)
