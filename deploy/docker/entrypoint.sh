#!/bin/sh
# The image's entrypoint: `coord "$@"` (default: `coord serve`, configured by the YAML
# file in COORD_CONFIG and COORD_* variables).
#
# Docker and compose secrets are files, and coord reads its cluster secret from
# --cluster-secret, the YAML file or COORD_CLUSTER_SECRET only: when
# COORD_CLUSTER_SECRET_FILE names a file, its content (trailing newlines removed)
# becomes COORD_CLUSTER_SECRET. The secret never appears on the command line.
set -eu
if [ -n "${COORD_CLUSTER_SECRET_FILE:-}" ]; then
    COORD_CLUSTER_SECRET="$(cat "$COORD_CLUSTER_SECRET_FILE")"
    export COORD_CLUSTER_SECRET
    unset COORD_CLUSTER_SECRET_FILE
fi
exec coord "$@"
