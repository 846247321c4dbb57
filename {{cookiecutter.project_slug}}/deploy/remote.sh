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

# What this host runs, as one JSON object, for the deploy program (deploy/ship) before any
# upload. Any python, however old, must answer: its version is what the refusal names.
# Writes nothing. PYTHON is checked by the Makefile: letters, digits and ._/+- only.
probe() {
    # shellcheck disable=SC2016
    "$PYTHON" -c 'import glob, json, os, platform, subprocess, sys
try:
    libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
except (AttributeError, ValueError, OSError):
    libc = ""
for loader in glob.glob("/lib/ld-musl-*.so.1"):  # musl has no confstr; its loader says its version
    said = subprocess.Popen([loader], stderr=subprocess.PIPE).communicate()[1].decode()
    libc = "musl " + "".join(line[8:] for line in said.splitlines() if line.startswith("Version "))
try:
    import venv
    has_venv = "ok"
except ImportError as exc:
    has_venv = str(exc) or "no venv module"
app = os.environ["APP_DIR"]
try:
    cached = sorted(os.listdir(os.path.join(app, "state", "wheels")))  # the upload leaves these out
except OSError:
    cached = []
current = os.path.join(app, "current")
where = app  # its disk: the nearest folder there is
while not os.path.isdir(where):
    where = os.path.dirname(where)
disk = os.statvfs(where)
print(json.dumps({"python": sys.argv[1], "python_version": platform.python_version(),
                  "implementation": platform.python_implementation().lower(), "machine": platform.machine(),
                  "libc": libc, "executable": sys.executable, "venv": has_venv, "cached": cached,
                  "current": os.path.basename(os.readlink(current)) if os.path.islink(current) else None,
                  "disk_free_kb": disk.f_bavail * disk.f_frsize // 1024}))' "$PYTHON" 2>/dev/null \
        || say "{\"python\": \"$PYTHON\", \"python_version\": \"none\"}"
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
