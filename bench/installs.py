"""bench/run.py's install figures (issue 22): the first install's floor, and a redeploy that
adds one dependency and bumps another, set against the unchanged redeploy of the same run.

The floor of a first install is `python3 -m venv --without-pip` and pypa's installer's own
command line (`python -m installer`, run from the release's installer wheel, compiling
level 0 as pip does) over the same wheels, on the host over ssh, timed there: the library
alone, in one process, without the checksums, the unpacking, the release directory or the
parallel compile the host program adds.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

# One dependency added (six) and one changed (click), both pure wheels of the local index.
ADDED, CHANGED = "six==1.17.0", ("click", "8.1.8")
TARGET_FIRST = 1.2  # seconds: the first deploy's install step, issue 22
TARGET_RATIO = 2.0  # the install with one added and one changed dependency, against the unchanged one


def install_floor(host, work: Path, release: Path) -> tuple[float, str]:
    """(seconds, note) of the first install's floor, for RELEASE (the deployed one)."""
    script = (f"set -e; d=$(mktemp -d {work}/floor.XXXXXX); cd $d; tool=$(ls {release}/wheels/installer-*.whl); "
              f"wheels=$(ls {release}/wheels/*.whl | grep -v /installer-); "
              f"s=$(date +%s%N); python3 -m venv --without-pip venv; m=$(date +%s%N); "
              f"PYTHONPATH=$tool venv/bin/python -m installer --compile-bytecode 0 $wheels >/dev/null 2>&1; "
              f"e=$(date +%s%N); rm -rf $d; echo $s $m $e")
    result = host.run(script, check=True, timeout=300)
    start, mid, end = (int(x) for x in result.stdout.split())
    return (end - start) / 1e9, (f"`python3 -m venv --without-pip` {(mid - start) / 1e9:.2f} s + `python -m installer "
                                 f"--compile-bytecode 0` {(end - mid) / 1e9:.2f} s of the same wheels")


@contextmanager
def changed_dependencies(project: Path):
    """requirements.txt with ADDED added and CHANGED bumped, restored afterwards."""
    requirements = project / "requirements.txt"
    saved = requirements.read_text()
    name, version = CHANGED
    changed = re.sub(rf"^{name}==\S+$", f"{name}=={version}", saved, flags=re.M | re.I)
    if changed == saved:
        raise RuntimeError(f"requirements.txt pins no {name}")
    requirements.write_text(changed + ADDED + "\n")
    try:
        yield
    finally:
        requirements.write_text(saved)


def install_line(out: str) -> str:
    """The host's `installed release …` line: what was linked, installed and compiled."""
    found = re.search(r"installed release \S+ \((.+)\)$", out, re.M)
    return found.group(1) if found else "?"
