#!/usr/bin/env bash
# The end-to-end scenario on a throwaway kind cluster: the same steps as the
# local one-node cluster, see e2e/run.sh (needs docker, kind, kubectl, node).
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/run.sh" kind "$@"
