#!/usr/bin/env bash
# Install what the test suite needs, then run it: pytest with any arguments given.
#   --no-remote   skip the tests that start servers (XRootD, Slurm), and install no Debian packages
# Debian packages give the real XRootD server and one-node Slurm the remote tests start; they are
# installed when running as root with apt-get. Without root (or apt-get) nothing is installed from
# Debian: the script says which packages are missing, and the tests that need them skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
debs="xrootd-server xrootd-client slurmctld slurmd slurm-client munge"
browser="chromium"  # the dashboard test's headless browser (its screenshot goes to the run folder)
remote=1
args=()
for a in "$@"; do
    if [ "$a" = "--no-remote" ]; then remote=0; else args+=("$a"); fi
done
if [ "$remote" = 0 ]; then
    echo "--no-remote: skipping the XRootD and Slurm server tests (their Debian packages are not installed)"
    export HEP_EXECUTOR_NO_REMOTE=1
    debs=""
fi
if [ "$remote" = 1 ] || [ "$(id -u)" = 0 ]; then
    debs="$debs $browser"
    missing=""
    for d in $debs; do dpkg -s "$d" >/dev/null 2>&1 || missing="$missing $d"; done
    if [ -n "$missing" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing Debian packages:$missing"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
        else
            why="not root"; command -v apt-get >/dev/null || why="no apt-get"
            echo "not installing Debian packages ($why):$missing; the tests that need them will skip"
            [ "$(id -u)" = 0 ] || echo "  (Slurm tests need root in any case; the XRootD ones run as any user;"
            [ "$(id -u)" = 0 ] || echo "   without chromium the dashboard test checks the page over HTTP only)"
        fi
    fi
fi
pip_user=()
if ! "$PY" -c 'import sys, os, sysconfig; sys.exit(0 if os.access(sysconfig.get_paths()["purelib"], os.W_OK) else 1)'; then
    echo "site-packages not writable: installing with pip --user"
    pip_user=(--user)
fi
"$PY" -m pip install -q --disable-pip-version-check "${pip_user[@]}" -e ".[test]"
echo "import contract (lint-imports):"
"$PY" -c 'import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())' --no-cache
exec "$PY" -m pytest --durations=15 "${args[@]}"
