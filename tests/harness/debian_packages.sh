#!/bin/sh
# Install the Debian packages of tests/debian-packages.txt that this machine lacks: as root
# with apt-get (from the machine's own apt sources), else print the one line to run. Quiet
# when nothing is missing; not a Debian machine: says so and leaves it to the tests' hints.
set -eu
list="$(dirname "$0")/../debian-packages.txt"
command -v dpkg-query >/dev/null 2>&1 || { echo "no dpkg here: install by hand what the tests name" >&2; exit 0; }
missing=""
while read -r package _; do
    case "$package" in ''|'#'*) continue ;; esac
    status=$(dpkg-query -W -f '${Status}' "$package" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing="$missing $package"
done <"$list"
[ -n "$missing" ] || exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages; the tests that need them skip. To install them:" >&2
    echo "  sudo apt-get install --no-install-recommends$missing" >&2
    exit 0
fi
echo "installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # one word per package
apt-get install -y -qq --no-install-recommends $missing >/dev/null
