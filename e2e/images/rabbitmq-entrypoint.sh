#!/bin/sh
# Entrypoint of localhost/parley-rabbitmq: Debian's rabbitmq-server with the
# contract of the official image that the operator relies on. The default
# user and password come from RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS
# and apply when the node initialises an empty data directory
# (/var/lib/rabbitmq). The configuration is written to /tmp, so the root file
# system may be read-only.
set -eu
conf="${RABBITMQ_CONFIG_FILE:-/tmp/rabbitmq.conf}"
umask 077
{
    echo "loopback_users = none"
    echo "listeners.tcp.default = 5672"
    if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then echo "default_user = ${RABBITMQ_DEFAULT_USER}"; fi
    if [ -n "${RABBITMQ_DEFAULT_PASS:-}" ]; then echo "default_pass = ${RABBITMQ_DEFAULT_PASS}"; fi
} >"${conf}"
: >"${RABBITMQ_ENABLED_PLUGINS_FILE:-/tmp/enabled_plugins}"
# The Debian wrapper refuses users other than root and rabbitmq; the server
# script itself runs as whoever the pod says.
exec /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
