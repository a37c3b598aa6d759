#!/usr/bin/env bash
# Install what the test suite needs, then run it: pytest with any arguments given.
# Debian packages give the real XRootD server and one-node Slurm the remote tests start
# (installed when running as root with apt-get; otherwise those tests skip and say why).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
debs="xrootd-server xrootd-client slurmctld slurmd slurm-client munge"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=""
    for d in $debs; do dpkg -s "$d" >/dev/null 2>&1 || missing="$missing $d"; done
    if [ -n "$missing" ]; then
        echo "installing Debian packages:$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
fi
"$PY" -m pip install -q --disable-pip-version-check -e ".[test]"
echo "import contract (lint-imports):"
"$PY" -c 'import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())' --no-cache
exec "$PY" -m pytest "$@"
