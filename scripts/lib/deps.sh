# shellcheck shell=bash
# Provisions parley's dependencies on a Debian 12 machine: installs what is
# missing, starts what is not already answering, and records what it started
# so that only that is stopped again.
#
#   source scripts/lib/deps.sh
#   parley_deps_up          # idempotent; exports the PARLEY_* URLs
#   parley_deps_down [name] # stops what parley_deps_up started (all, or the named ones)
#
# Ports and places can be moved with PARLEY_HOME, PARLEY_REDIS_PORT,
# PARLEY_AMQP_PORT, PARLEY_MONGO_PORT, PARLEY_SMTP_PORT, PARLEY_MONGO_STORAGE.

PARLEY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PARLEY_HOME="${PARLEY_HOME:-/var/tmp/parley}"
PARLEY_RUN="$PARLEY_HOME/run"
PARLEY_REDIS_PORT="${PARLEY_REDIS_PORT:-6379}"
PARLEY_AMQP_PORT="${PARLEY_AMQP_PORT:-5672}"
PARLEY_MONGO_PORT="${PARLEY_MONGO_PORT:-27017}"
PARLEY_SMTP_PORT="${PARLEY_SMTP_PORT:-2525}"
PARLEY_DEPS_STARTED=()
_parley_apt_updated=""

parley_log() { printf '[parley] %s\n' "$*" >&2; }
parley_die() { printf '[parley] error: %s\n' "$*" >&2; exit 1; }

_parley_root_do() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else parley_die "need root (or sudo) for: $*"
  fi
}

# Installs Debian packages that are not installed yet.
parley_apt() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ -z "$_parley_apt_updated" ]; then
    parley_log "apt-get update"
    _parley_root_do env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    _parley_apt_updated=1
  fi
  parley_log "installing ${missing[*]}"
  _parley_root_do env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# True when something accepts TCP connections on 127.0.0.1:$1.
parley_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# parley_wait DESCRIPTION SECONDS LOG COMMAND...: polls COMMAND until it succeeds.
parley_wait() {
  local what="$1" seconds="$2" log="$3"
  shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      parley_die "$what did not come up within ${seconds}s${log:+ (log: $log)}"
    fi
    sleep 0.2
  done
}

_parley_mark_started() {
  mkdir -p "$PARLEY_RUN/started"
  printf '%s\n' "${2:-}" >"$PARLEY_RUN/started/$1"
  PARLEY_DEPS_STARTED+=("$1")
}

_parley_redis_up() {
  command -v redis-server >/dev/null 2>&1 || parley_apt redis-server
  if redis-cli -p "$PARLEY_REDIS_PORT" ping 2>/dev/null | grep -q PONG; then return 0; fi
  parley_log "starting redis on 127.0.0.1:$PARLEY_REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$PARLEY_REDIS_PORT" --save "" --appendonly no \
    --dir "$PARLEY_RUN" --pidfile "$PARLEY_RUN/redis.pid" --logfile "$PARLEY_RUN/redis.log"
  parley_wait "redis" 20 "$PARLEY_RUN/redis.log" sh -c "redis-cli -p $PARLEY_REDIS_PORT ping | grep -q PONG"
  _parley_mark_started redis "$(cat "$PARLEY_RUN/redis.pid")"
}

_parley_rabbit_up() {
  command -v rabbitmq-server >/dev/null 2>&1 || parley_apt rabbitmq-server
  if parley_port_open "$PARLEY_AMQP_PORT"; then return 0; fi
  [ "$PARLEY_AMQP_PORT" = 5672 ] || parley_die "RabbitMQ is only started on its default port 5672 (PARLEY_AMQP_PORT=$PARLEY_AMQP_PORT is not answering)"
  parley_log "starting rabbitmq on 127.0.0.1:5672"
  _parley_root_do rabbitmq-server -detached >/dev/null 2>&1 || true
  parley_wait "rabbitmq" 120 "/var/log/rabbitmq" rabbitmq-diagnostics -q ping
  parley_wait "rabbitmq AMQP listener" 60 "/var/log/rabbitmq" parley_port_open 5672
  _parley_mark_started rabbitmq ""
}

_parley_venv_up() {
  local venv="$PARLEY_HOME/venv"
  if [ -x "$venv/bin/secantusd-py" ] && "$venv/bin/python" -c 'import aiosmtpd, pymongo' 2>/dev/null; then return 0; fi
  command -v python3 >/dev/null 2>&1 || parley_apt python3
  python3 -c 'import venv, ensurepip' 2>/dev/null || parley_apt python3-venv
  parley_log "installing secantusdb and aiosmtpd into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check secantusdb aiosmtpd pymongo \
    || parley_die "pip install of secantusdb/aiosmtpd failed"
}

_parley_mongo_ping() {
  "$PARLEY_HOME/venv/bin/python" - "$PARLEY_MONGO_PORT" <<'PY'
import sys
from pymongo import MongoClient
client = MongoClient("127.0.0.1", int(sys.argv[1]), directConnection=True, serverSelectionTimeoutMS=1000)
client.admin.command("ping")
PY
}

_parley_mongo_up() {
  if parley_port_open "$PARLEY_MONGO_PORT" && _parley_mongo_ping 2>/dev/null; then return 0; fi
  local storage="${PARLEY_MONGO_STORAGE:-$PARLEY_HOME/mongo-data}"
  [ "$storage" = ":memory:" ] || mkdir -p "$storage"
  parley_log "starting SecantusDB (MongoDB wire protocol) on 127.0.0.1:$PARLEY_MONGO_PORT, store $storage"
  setsid nohup "$PARLEY_HOME/venv/bin/secantusd-py" --host 127.0.0.1 --port "$PARLEY_MONGO_PORT" \
    --storage-path "$storage" --log-level WARNING >"$PARLEY_RUN/mongo.log" 2>&1 </dev/null &
  local pid=$!
  parley_wait "SecantusDB" 60 "$PARLEY_RUN/mongo.log" _parley_mongo_ping
  _parley_mark_started mongo "$pid"
}

_parley_smtp_up() {
  if parley_port_open "$PARLEY_SMTP_PORT"; then return 0; fi
  mkdir -p "$PARLEY_HOME/mail"
  parley_log "starting the SMTP sink on 127.0.0.1:$PARLEY_SMTP_PORT (mail in $PARLEY_HOME/mail)"
  setsid nohup "$PARLEY_HOME/venv/bin/python" "$PARLEY_ROOT/scripts/smtp_sink.py" --host 127.0.0.1 \
    --port "$PARLEY_SMTP_PORT" --dir "$PARLEY_HOME/mail" >"$PARLEY_RUN/smtp.log" 2>&1 </dev/null &
  local pid=$!
  parley_wait "SMTP sink" 30 "$PARLEY_RUN/smtp.log" parley_port_open "$PARLEY_SMTP_PORT"
  _parley_mark_started smtp "$pid"
}

_parley_node_up() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then parley_apt nodejs npm; fi
  if [ ! -d "$PARLEY_ROOT/e2e/js/node_modules/socket.io-client" ]; then
    parley_log "installing the Socket.IO test client (npm ci in e2e/js)"
    (cd "$PARLEY_ROOT/e2e/js" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
      || parley_die "npm ci in e2e/js failed"
  fi
}

# Starts every dependency that is not answering; exports where they are.
parley_deps_up() {
  mkdir -p "$PARLEY_RUN"
  parley_apt ca-certificates curl openssl procps
  _parley_redis_up
  _parley_rabbit_up
  _parley_venv_up
  _parley_mongo_up
  _parley_smtp_up
  _parley_node_up
  export PARLEY_REDIS_URL="redis://127.0.0.1:$PARLEY_REDIS_PORT"
  export PARLEY_AMQP_URL="amqp://guest:guest@127.0.0.1:$PARLEY_AMQP_PORT/%2f"
  export PARLEY_MONGODB_URI="mongodb://127.0.0.1:$PARLEY_MONGO_PORT/?directConnection=true"
  export PARLEY_SMTP_HOST=127.0.0.1 PARLEY_SMTP_PORT PARLEY_SMTP_TLS=none
  export PARLEY_SECANTUSD="$PARLEY_HOME/venv/bin/secantusd-py"
  export PARLEY_PYTHON="$PARLEY_HOME/venv/bin/python"
  export PARLEY_SMTP_SINK="$PARLEY_ROOT/scripts/smtp_sink.py"
}

_parley_stop_pid() {
  local name="$1" pid="$2"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + 15))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  parley_log "stopped $name"
}

# Stops what parley_deps_up recorded as started by it (all, or the named ones).
parley_deps_down() {
  local names=("$@") name marker
  if [ "${#names[@]}" -eq 0 ] && [ -d "$PARLEY_RUN/started" ]; then
    for marker in "$PARLEY_RUN/started"/*; do
      [ -e "$marker" ] && names+=("$(basename "$marker")")
    done
  fi
  for name in "${names[@]}"; do
    marker="$PARLEY_RUN/started/$name"
    [ -e "$marker" ] || continue
    case "$name" in
      rabbitmq) _parley_root_do rabbitmqctl stop >/dev/null 2>&1 || true; parley_log "stopped rabbitmq" ;;
      *) _parley_stop_pid "$name" "$(cat "$marker")" ;;
    esac
    rm -f "$marker"
  done
}
