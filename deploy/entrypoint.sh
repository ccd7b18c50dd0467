#!/bin/sh
# The image's entrypoint: `sharevault "$@"`, after reading secrets from files.
#
# Every SHAREVAULT_<NAME>_FILE=<path> sets SHAREVAULT_<NAME> to that file's content (trailing
# newlines dropped), the Docker-secrets convention: compose mounts secrets/ read-only and names
# each file (compose.yaml). A path that does not exist is skipped, so that commands needing no
# secret (`keys generate`, `--help`) run before any secret exists; the settings then say which
# one is missing, for the commands that need it. Setting both a variable and its _FILE is refused.
set -eu
for var in $(env | sed -n 's/^\(SHAREVAULT_[A-Z0-9_]*\)_FILE=.*$/\1/p'); do
    eval "path=\${${var}_FILE}"
    unset "${var}_FILE"
    [ -e "$path" ] || continue
    if eval "[ -n \"\${${var}:-}\" ]"; then
        echo "sharevault: both ${var} and ${var}_FILE are set; keep one" >&2
        exit 2
    fi
    if [ ! -r "$path" ]; then
        echo "sharevault: ${var}_FILE names ${path}, which this user (uid $(id -u)) cannot read" >&2
        exit 2
    fi
    value=$(cat "$path")
    export "${var}=${value}"
done
exec sharevault "$@"
