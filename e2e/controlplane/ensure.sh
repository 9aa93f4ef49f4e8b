#!/usr/bin/env bash
# Ensures the Kubernetes binaries exist and prints the directory that holds
# them (last line of stdout): kube-apiserver, kube-controller-manager and etcd
# for the control plane, plus kubelet, kube-proxy and kube-scheduler for the
# one-node cluster (e2e/node). All five are built in one go from one source.
#
# Order of preference:
#   1. $KUBEBUILDER_ASSETS (the envtest convention), when it holds kube-apiserver;
#   2. a cache outside the checkout ($PARLEY_K8S_CACHE, default /var/tmp/parley/k8s),
#      keyed by version, filled once by building Debian's `kubernetes` source
#      package (1.20.2) with the modern-go/reflect2 1.0.2 vendor replacement.
# etcd comes from Debian's etcd-server package and is linked into the bin dir.
# Idempotent: a second run only prints the cached directory.
set -euo pipefail

K8S_VERSION="1.20.2"
CACHE_ROOT="${PARLEY_K8S_CACHE:-${PARLEY_HOME:-/var/tmp/parley}/k8s}"
BIN_DIR="${CACHE_ROOT}/${K8S_VERSION}/bin"

log() { printf '[controlplane] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "${KUBEBUILDER_ASSETS}/kube-apiserver" ]; then
    log "using KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS}"
    printf '%s\n' "${KUBEBUILDER_ASSETS}"
    exit 0
fi

K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

have_built() {
    local bin
    for bin in "${K8S_BINARIES[@]}"; do
        [ -x "${BIN_DIR}/${bin}" ] || return 1
    done
}

have_all() {
    have_built && [ -x "${BIN_DIR}/etcd" ]
}

if have_all; then
    printf '%s\n' "${BIN_DIR}"
    exit 0
fi

mkdir -p "${CACHE_ROOT}"
# One builder at a time: concurrent test binaries may all call this script.
exec 9>"${CACHE_ROOT}/.build.lock"
flock 9
if have_all; then
    printf '%s\n' "${BIN_DIR}"
    exit 0
fi

ensure_packages() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg -s "${pkg}" >/dev/null 2>&1 || missing+=("${pkg}")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
}

# The deb-src entry mirrors the machine's own Debian source (URI and keyring),
# so no package host is named here.
SRC_LIST=/etc/apt/sources.list.d/parley-deb-src.sources
# shellcheck source=../../scripts/lib/debian-mirror.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib" && pwd)/debian-mirror.sh"
CODENAME="$(parley_debian_codename)"
if ! grep -rqsE "^deb-src .*${CODENAME} .*main" /etc/apt/sources.list /etc/apt/sources.list.d/ \
    && ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/; then
    read -r MIRROR KEYRING < <(parley_debian_mirror)
    log "adding a deb-src entry for ${CODENAME} main from the machine's apt sources"
    printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
        "${MIRROR}" "${CODENAME}" "${KEYRING}" | as_root tee "${SRC_LIST}" >/dev/null
    as_root apt-get update >&2
fi

ensure_packages etcd-server dpkg-dev

if ! have_built; then
    ensure_packages golang-go rsync jq golang-github-modern-go-reflect2-dev make
    WORK="${CACHE_ROOT}/${K8S_VERSION}/src"
    rm -rf "${WORK}"
    mkdir -p "${WORK}"
    # Debian 12 versions it 1.20.5+really1.20.2.
    log "fetching Debian source package kubernetes (${K8S_VERSION})"
    (cd "${WORK}" && apt-get source --download-only kubernetes >&2)
    (cd "${WORK}" && dpkg-source -x ./*.dsc tree >&2)
    SRC="${WORK}/tree"
    # reflect2 1.0.1 crashes kube-apiserver under Go >= 1.18 (mapiterinit).
    rm -rf "${SRC}/vendor/github.com/modern-go/reflect2"
    cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "${SRC}/vendor/github.com/modern-go/reflect2"
    mkdir -p "${SRC}/.go/src/k8s.io"
    ln -sfn ../../.. "${SRC}/.go/src/k8s.io/kubernetes"
    what=""
    for bin in "${K8S_BINARIES[@]}"; do what="${what:+${what} }cmd/${bin}"; done
    log "building ${K8S_BINARIES[*]} (about 10 minutes on 2 cores)"
    (cd "${SRC}" && GOPATH="${SRC}/.go" CGO_ENABLED=0 make WHAT="${what}" >&2)
    mkdir -p "${BIN_DIR}"
    for bin in "${K8S_BINARIES[@]}"; do
        install -m 0755 "${SRC}/_output/bin/${bin}" "${BIN_DIR}/"
    done
    rm -rf "${WORK}"
fi

ln -sfn "$(command -v etcd || echo /usr/bin/etcd)" "${BIN_DIR}/etcd"
have_all || { log "binaries missing in ${BIN_DIR}"; exit 1; }
printf '%s\n' "${BIN_DIR}"
