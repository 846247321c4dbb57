"""A deploy's `make test` is skipped when this very tree passed it already.

The tree is every file git sees here (tracked and untracked, less what .gitignore leaves
out), by path and content, plus the venv's install stamp and Python and the host-local
config/local.ini: what the tests read. A deploy that finds the key of its tree in
build/tested says so and goes on; `make test` itself always runs. Outside a git work tree
there is no key, and the tests always run. build/tested keeps the last few trees that
passed, so that a change tried and taken back is not tested again.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

STAMP = Path("build/tested")  # the keys of the last trees whose tests passed in a deploy, one a line
KEPT = 16
ALSO = (".venv/.installed", ".venv/pyvenv.cfg", "config/local.ini")  # git ignores them; the tests do not


def tree_key() -> str | None:
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                capture_output=True, stdin=subprocess.DEVNULL, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    digest = hashlib.sha256()
    names = sorted({os.fsdecode(n) for n in listed.split(b"\0") if n})
    for name in [*names, *ALSO]:
        path = Path(name)
        digest.update(name.encode() + b"\0")
        try:
            digest.update(hashlib.sha256(path.read_bytes()).digest() if not path.is_symlink()
                          else b"link:" + os.fsencode(os.readlink(path)))
        except OSError:  # a tracked file deleted, or none of ALSO
            digest.update(b"absent")
        if name == ".venv/.installed":  # make venv touches it: its time is the install's
            digest.update(str(path.stat().st_mtime_ns if path.exists() else 0).encode())
    return digest.hexdigest()


def passed() -> list[str]:
    try:
        return STAMP.read_text().split()
    except OSError:
        return []


def passed_already(key: str | None) -> bool:
    return key is not None and key in passed()


def record(key: str | None) -> None:
    """After the tests passed: KEY, when the tree is still the one they ran on."""
    if key is not None and tree_key() == key:
        STAMP.parent.mkdir(exist_ok=True)
        kept = [k for k in passed() if k != key][-(KEPT - 1):]
        STAMP.write_text("".join(f"{k}\n" for k in [*kept, key]))
