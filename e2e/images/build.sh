#!/usr/bin/env bash
# Builds the images the one-node cluster runs, with no registry: every base
# is a Debian root filesystem bootstrapped here from the Debian archive this
# machine's apt already uses. Each image is written as a docker-archive tar
# (loadable by `ctr images import`, `kind load image-archive`, `docker load`).
#
#   e2e/images/build.sh [IMAGE...]     default: all of them
#
# Images (tags are local names, never pulled):
#   pause       localhost/parley-pause:1        the pod sandbox (e2e/node/pause.c, static)
#   base        localhost/parley-base:bookworm  Debian minbase + CA certificates + user nonroot (65532):
#                                               the runtime base of the project's Dockerfile
#   parley      localhost/parley:$PARLEY_IMAGE_TAG (default dev)
#                                               the Dockerfile's runtime stage, built by buildah on
#                                               `base` with the release binaries built here
#   redis       localhost/parley-redis:7        Debian's redis-server, uid 999, WORKDIR /data
#   rabbitmq    localhost/parley-rabbitmq:3     Debian's rabbitmq-server, uid 999, honours
#                                               RABBITMQ_DEFAULT_USER/PASS; data in /var/lib/rabbitmq
#   mongodb     localhost/parley-mongodb:secantus   SecantusDB (MongoDB wire protocol) from PyPI
#   smtp-sink   localhost/parley-smtp-sink:1    scripts/smtp_sink.py (aiosmtpd) with its HTTP read API
#
# Output: $PARLEY_IMAGES (default /var/tmp/parley/images/out)/<image>.tar.
# Root file systems are cached in $PARLEY_IMAGES/../rootfs, keyed by the
# recipe: a second run rebuilds only what changed. Needs root (debootstrap,
# chroot).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"
OUT="${PARLEY_IMAGES:-${PARLEY_HOME:-/var/tmp/parley}/images/out}"
WORK="$(dirname "${OUT}")"
ROOTFS="${WORK}/rootfs"
TAG="${PARLEY_IMAGE_TAG:-dev}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${PARLEY_HOME:-/var/tmp/parley}/target}"

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap and chroot)"
mkdir -p "${OUT}" "${ROOTFS}"
# One build at a time: e2e runs and scripts/cluster may start together.
exec 8>"${WORK}/.build.lock"
flock 8

# parley_apt: installs missing Debian packages (shared with the local stack).
# shellcheck source=../../scripts/lib/deps.sh
source "${ROOT}/scripts/lib/deps.sh"

# key TEXT FILE...: a short hash of a recipe's text and its input files.
key() {
    local text="$1"
    shift
    { printf '%s\n' "${text}"; cat "$@" </dev/null; } | sha256sum | cut -c1-16
}

# What the base is made of; change it to rebuild the base.
BASE_RECIPE="debootstrap minbase +ca-certificates, user nonroot 65532, policy-rc.d 101"

# ------------------------------------------------------------------ root file systems

# The Debian minbase every image starts from, cached by recipe.
base_rootfs() {
    local k dir
    k="$(key "${BASE_RECIPE}")"
    dir="${ROOTFS}/base-${k}"
    if [ ! -f "${dir}.done" ]; then
        parley_apt debootstrap
        # shellcheck source=../../scripts/lib/debian-mirror.sh
        source "${ROOT}/scripts/lib/debian-mirror.sh"
        local mirror keyring codename
        read -r mirror keyring < <(parley_debian_mirror)
        codename="$(parley_debian_codename)"
        rm -rf "${dir}" "${ROOTFS}"/base-*
        log "debootstrap ${codename} (minbase) from the machine's own Debian source"
        debootstrap --variant=minbase --include=ca-certificates --keyring="${keyring}" \
            "${codename}" "${dir}" "${mirror}" >"${WORK}/debootstrap.log" 2>&1 ||
            die "debootstrap failed (${WORK}/debootstrap.log)"
        # The runtime user of the project's Dockerfile.
        chroot "${dir}" groupadd -g 65532 nonroot
        chroot "${dir}" useradd -u 65532 -g 65532 -d /home/nonroot -M -s /usr/sbin/nologin nonroot
        # No daemon starts inside a chroot while packages are installed.
        printf '#!/bin/sh\nexit 101\n' >"${dir}/usr/sbin/policy-rc.d"
        chmod 755 "${dir}/usr/sbin/policy-rc.d"
        touch "${dir}.done"
    fi
    printf '%s\n' "${dir}"
}

# in_chroot DIR COMMAND...: runs COMMAND in DIR with /proc, /dev and the
# host's resolver, unmounted again whatever happens.
in_chroot() {
    local dir="$1"
    shift
    mount -t proc proc "${dir}/proc"
    mount --bind /dev "${dir}/dev"
    cp /etc/resolv.conf "${dir}/etc/resolv.conf"
    local status=0
    chroot "${dir}" /usr/bin/env DEBIAN_FRONTEND=noninteractive "$@" || status=$?
    umount "${dir}/dev" || umount -l "${dir}/dev"
    umount "${dir}/proc" || umount -l "${dir}/proc"
    return "${status}"
}

# derived NAME RECIPE_FUNCTION INPUT...: a copy of the base with RECIPE run
# in it, cached by recipe and inputs; prints its directory.
derived() {
    local name="$1" recipe="$2" base k dir
    shift 2
    base="$(base_rootfs)"
    k="$(key "$(declare -f "${recipe}" renumber_user in_chroot)" "$@")-$(basename "${base}")"
    dir="${ROOTFS}/${name}-${k}"
    if [ ! -f "${dir}.done" ]; then
        rm -rf "${ROOTFS}/${name}"-*
        log "building the ${name} root file system"
        cp -a "${base}" "${dir}"
        # In the background, so that `set -e` holds inside the recipe (it is
        # ignored in a function called as `recipe || die`).
        local status=0
        "${recipe}" "${dir}" >"${WORK}/${name}.log" 2>&1 &
        wait "$!" || status=$?
        [ "${status}" -eq 0 ] || die "${name}: recipe failed (${WORK}/${name}.log)"
        # Nothing of apt's caches or the build host's resolver ships.
        rm -rf "${dir}"/var/lib/apt/lists/* "${dir}"/var/cache/apt/*.bin "${dir}"/var/cache/apt/archives/*.deb
        : >"${dir}/etc/resolv.conf"
        touch "${dir}.done"
    fi
    printf '%s\n' "${dir}"
}

# Gives the package's system user the uid and gid 999 that the operator's
# store pods run as (the official images' convention).
renumber_user() {
    local dir="$1" user="$2"
    chroot "${dir}" groupmod -g 999 "${user}"
    chroot "${dir}" usermod -u 999 -g 999 "${user}"
}

recipe_redis() {
    local dir="$1"
    in_chroot "${dir}" apt-get update
    in_chroot "${dir}" apt-get install -y --no-install-recommends redis-server
    renumber_user "${dir}" redis
    mkdir -p "${dir}/data"
    chown 999:999 "${dir}/data"
}

recipe_rabbitmq() {
    local dir="$1"
    in_chroot "${dir}" apt-get update
    in_chroot "${dir}" apt-get install -y --no-install-recommends rabbitmq-server
    renumber_user "${dir}" rabbitmq
    chown -R 999:999 "${dir}/var/lib/rabbitmq" "${dir}/var/log/rabbitmq"
    install -m 0755 "${HERE}/rabbitmq-entrypoint.sh" "${dir}/usr/local/bin/rabbitmq-entrypoint"
}

recipe_mongodb() {
    local dir="$1"
    in_chroot "${dir}" apt-get update
    in_chroot "${dir}" apt-get install -y --no-install-recommends python3 python3-venv
    in_chroot "${dir}" python3 -m venv /opt/secantusdb
    # Wheels are fetched by the host's pip (its index and certificate
    # settings), then installed offline in the image.
    python3 -m pip download --quiet --only-binary=:all: --dest "${dir}/tmp/wheels" \
        "secantusdb${SECANTUSDB_VERSION:+==${SECANTUSDB_VERSION}}"
    in_chroot "${dir}" /opt/secantusdb/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels secantusdb
    rm -rf "${dir}/tmp/wheels"
    test -x "${dir}/opt/secantusdb/bin/secantusd-py"
    mkdir -p "${dir}/data"
    chown 999:999 "${dir}/data"
}

recipe_smtp_sink() {
    local dir="$1"
    in_chroot "${dir}" apt-get update
    in_chroot "${dir}" apt-get install -y --no-install-recommends python3 python3-aiosmtpd
    install -m 0755 "${ROOT}/scripts/smtp_sink.py" "${dir}/usr/local/bin/smtp-sink"
}

# ------------------------------------------------------------------ archives

# archive ROOTFS TAG OUT [--entrypoint JSON] [--cmd JSON] [--user U] [--workdir D] [--env K=V]...
archive() {
    python3 "${HERE}/archive.py" --rootfs "$1" --tag "$2" --out "$3" "${@:4}"
}

build_pause() {
    local k out="${OUT}/parley-pause.tar"
    k="$(key "$(declare -f build_pause)" "${ROOT}/e2e/node/pause.c")"
    [ -f "${out}" ] && [ "$(cat "${out}.key" 2>/dev/null)" = "${k}" ] && return 0
    local dir
    dir="$(mktemp -d "${WORK}/pause.XXXXXX")"
    gcc -static -Os -o "${dir}/pause" "${ROOT}/e2e/node/pause.c" || { rm -rf "${dir}"; die "cannot build pause.c (gcc -static)"; }
    mkdir -p "${dir}/root"
    install -m 0755 "${dir}/pause" "${dir}/root/pause"
    archive "${dir}/root" localhost/parley-pause:1 "${out}" --entrypoint '["/pause"]' --user 65535:65535
    rm -rf "${dir}"
    echo "${k}" >"${out}.key"
    log "built localhost/parley-pause:1"
}

# build_rootfs_image NAME TAG DIR ARCHIVE-ARGS...
build_rootfs_image() {
    local name="$1" tag="$2" dir="$3" out="${OUT}/parley-$1.tar"
    shift 3
    local k
    k="$(printf '%s %s %s' "$(basename "${dir}")" "${tag}" "$*" | sha256sum | cut -c1-16)"
    [ -f "${out}" ] && [ "$(cat "${out}.key" 2>/dev/null)" = "${k}" ] && return 0
    archive "${dir}" "${tag}" "${out}" "$@"
    echo "${k}" >"${out}.key"
    log "built ${tag}"
}

build_base() {
    build_rootfs_image base localhost/parley-base:bookworm "$(base_rootfs)" --user 65532:65532
}

build_redis() {
    build_rootfs_image redis localhost/parley-redis:7 "$(derived redis recipe_redis)" \
        --cmd '["redis-server"]' --user 999:999 --workdir /data
}

build_rabbitmq() {
    build_rootfs_image rabbitmq localhost/parley-rabbitmq:3 \
        "$(derived rabbitmq recipe_rabbitmq "${HERE}/rabbitmq-entrypoint.sh")" \
        --entrypoint '["/usr/local/bin/rabbitmq-entrypoint"]' --user 999:999 --workdir /var/lib/rabbitmq \
        --env HOME=/var/lib/rabbitmq --env RABBITMQ_LOGS=- --env RABBITMQ_CONFIG_FILE=/tmp/rabbitmq.conf \
        --env RABBITMQ_ENABLED_PLUGINS_FILE=/tmp/enabled_plugins
}

build_mongodb() {
    build_rootfs_image mongodb localhost/parley-mongodb:secantus "$(derived mongodb recipe_mongodb)" \
        --entrypoint '["/opt/secantusdb/bin/secantusd-py"]' \
        --cmd '["--host", "0.0.0.0", "--port", "27017", "--storage-path", "/data"]' --user 999:999 --workdir /data
}

build_smtp_sink() {
    build_rootfs_image smtp-sink localhost/parley-smtp-sink:1 \
        "$(derived smtp-sink recipe_smtp_sink "${ROOT}/scripts/smtp_sink.py")" \
        --entrypoint '["/usr/local/bin/smtp-sink"]' \
        --cmd '["--host", "0.0.0.0", "--port", "1025", "--http-port", "8025", "--dir", "/tmp/mail"]' \
        --user 65532:65532
}

# The project's Dockerfile, runtime stage, on the local base: the user, the
# file layout and the entrypoint that run here are the ones that ship.
build_parley() {
    build_base
    parley_apt buildah
    local bins="${CARGO_TARGET_DIR}/release" ctx out="${OUT}/parley.tar" k
    # The Dockerfile's own build command, read from it.
    local -a build
    read -r -a build < <(sed -n 's/^RUN \(cargo build .*\)$/\1/p' "${ROOT}/Dockerfile" | head -n 1)
    [ "${#build[@]}" -gt 2 ] || die "no RUN cargo build line in the Dockerfile"
    log "${build[*]}"
    (cd "${ROOT}" && "${build[@]}" >&2)
    k="$(cat "${ROOT}/Dockerfile" "${OUT}/parley-base.tar.key" "${bins}"/parley-{user,chat,mail,operator} | sha256sum | cut -c1-16)-${TAG}"
    [ -f "${out}" ] && [ "$(cat "${out}.key" 2>/dev/null)" = "${k}" ] && return 0
    ctx="$(mktemp -d "${WORK}/parley-context.XXXXXX")"
    cp "${bins}"/parley-{user,chat,mail,operator} "${ctx}/"
    local storage="${WORK}/buildah"
    local -a bah=(buildah --root "${storage}/root" --runroot "${storage}/run" --storage-driver vfs)
    "${bah[@]}" rmi -f localhost/parley-base:bookworm >/dev/null 2>&1 || true
    "${bah[@]}" pull -q "docker-archive:${OUT}/parley-base.tar" >/dev/null
    "${bah[@]}" bud --quiet --pull-never --layers=false --target runtime \
        --build-arg RUNTIME_BASE=localhost/parley-base:bookworm --build-arg BINARIES=prebuilt \
        --build-arg "VERSION=${TAG}" --build-arg "REVISION=$(git -C "${ROOT}" rev-parse HEAD 2>/dev/null || echo unknown)" \
        -f "${ROOT}/Dockerfile" -t "localhost/parley:${TAG}" "${ctx}" >&2
    rm -f "${out}"
    "${bah[@]}" push -q "localhost/parley:${TAG}" "docker-archive:${out}:localhost/parley:${TAG}" >&2
    "${bah[@]}" rmi -f "localhost/parley:${TAG}" >/dev/null 2>&1 || true
    rm -rf "${ctx}"
    echo "${k}" >"${out}.key"
    log "built localhost/parley:${TAG} from the Dockerfile"
}

images=("$@")
[ "${#images[@]}" -gt 0 ] || images=(pause base parley redis rabbitmq mongodb smtp-sink)
for image in "${images[@]}"; do
    case "${image}" in
    pause) build_pause ;;
    base) build_base ;;
    parley) build_parley ;;
    redis) build_redis ;;
    rabbitmq) build_rabbitmq ;;
    mongodb) build_mongodb ;;
    smtp-sink) build_smtp_sink ;;
    *) die "unknown image ${image}" ;;
    esac
done
printf '%s\n' "${OUT}"
