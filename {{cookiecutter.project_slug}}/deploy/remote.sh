#!/bin/sh
# The host side of every make target: `sh remote.sh COMMAND [ARGS]`. This sh part sets the
# app's directory and answers the probe on any Python, or none (so that a host too old is
# named by its version); every other command is the host program, deploy/host/, which the
# Makefile zips after this script (build/remote.sh): Python runs this same file as a zip
# application. `python3 remote.sh help` lists the commands.
#
# Settings come from the environment: APP_DIR (required; relative means under $HOME),
# PYTHON (python3), and those the host program reads (host/context.py: Settings).
set -eu

PYTHON=${PYTHON:-python3}
say() { printf '%s\n' "$*" 2>/dev/null || true; }
die() { say "error: $*" >&2; exit 1; }

[ -n "${APP_DIR:-}" ] || die "APP_DIR is not set"
case $APP_DIR in /*) ;; *) APP_DIR=$HOME/$APP_DIR ;; esac
export APP_DIR PYTHON

# What this host runs, for `target.py check` on the deploying machine, before any upload.
# Any python, however old, must answer: its version is what the refusal names. Writes nothing.
probe() {
    say "python=$PYTHON"
    # shellcheck disable=SC2016
    "$PYTHON" -c 'import os, platform, sys
try:
    libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
except (AttributeError, ValueError, OSError):
    libc = ""
try:
    import venv
    has_venv = "ok"
except ImportError as exc:
    has_venv = str(exc) or "no venv module"
print("python_version=" + platform.python_version())
print("implementation=" + platform.python_implementation().lower())
print("machine=" + platform.machine())
print("libc=" + libc)
print("executable=" + sys.executable)
print("venv=" + has_venv)' 2>/dev/null || { say "python_version=none"; return 0; }
    for loader in /lib/ld-musl-*.so.1; do  # musl has no confstr; its loader says its version
        if [ -x "$loader" ]; then say "libc=musl $("$loader" 2>&1 | sed -n 's/^Version //p')"; fi
    done
    say "cached=$(ls "$APP_DIR/shared/wheels" 2>/dev/null | tr '\n' ' ')"  # the upload leaves these out
    where=$APP_DIR  # its disk: the nearest folder there is
    while [ ! -d "$where" ]; do where=$(dirname "$where"); done
    say "disk_free_kb=$(df -Pk "$where" 2>/dev/null | awk 'NR == 2 { print $4 }')"
}

case ${1:-} in
    probe) probe; exit 0 ;;
esac
command -v "$PYTHON" >/dev/null 2>&1 || die "$(hostname) has no $PYTHON (PYTHON=…): the host program needs Python 3.10 or newer"
# -S: the host program is standard library only, and no site hook of the host's runs in it.
# A bare copy of this script (a checkout's deploy/remote.sh) runs the folder beside it.
program=$0
if [ -f "$(dirname "$0")/host/__main__.py" ]; then program=$(dirname "$0")/host; fi
exec "$PYTHON" -S "$program" "$@"
