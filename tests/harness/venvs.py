"""`make venv` once per requirement set in a run, copied into every other bake with the same set.

A bake's `make venv` costs about 30 s of CPU (pip resolves, installs and byte-compiles every
pin), and many fixtures bake the same answers. The first bake of a set runs `make venv` for
real; the others get a copy of that venv, its paths moved to their own project: the scripts'
shebangs, pyvenv.cfg, and the project's own editable install (its .pth and direct_url.json).
Compiled files need no change: Python gives a code object the path it was loaded from.

The set is the files `make venv` reads (the Makefile's $(VENV)/.installed prerequisites).
The cache is the run's, shared by its xdist workers (their base temp directories' parent),
and a lock per set keeps two workers from making the same one.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from pathlib import Path

from .app import make

READ_BY_MAKE_VENV = ("requirements.txt", "requirements-dev.txt", "setup.py")


def requirement_set(project: Path) -> str:
    digest = hashlib.sha256()
    for name in READ_BY_MAKE_VENV:
        digest.update(name.encode() + b"\0" + (project / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_dir(tmp_path_factory) -> Path:
    """The run's venv cache: beside the xdist workers' own base temp directories."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "venvs"
    root.mkdir(exist_ok=True)
    return root


def moved_files(venv: Path) -> list[Path]:
    """The files of a venv that name its path (besides the compiled ones)."""
    site = next((venv / "lib").glob("python*/site-packages"))
    files = [venv / "pyvenv.cfg", *site.glob("*.pth"), *site.glob("*.dist-info/direct_url.json")]
    return files + [p for p in (venv / "bin").iterdir() if p.is_file() and not p.is_symlink()]


def retarget(venv: Path, old: str, new: str) -> None:
    for path in moved_files(venv):
        data = path.read_bytes()
        if old.encode() in data:
            path.write_bytes(data.replace(old.encode(), new.encode()))


def make_venv(project: Path, tmp_path_factory) -> None:
    """What `make venv` makes in PROJECT, for real or as a copy of the same set's."""
    entry = cache_dir(tmp_path_factory) / requirement_set(project)
    with open(f"{entry}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (entry / "made-in").exists():
            make(project, "venv", timeout=600)
            shutil.copytree(project / ".venv", entry / "venv", symlinks=True)
            (entry / "made-in").write_text(str(project))
            return
    shutil.copytree(entry / "venv", project / ".venv", symlinks=True)
    retarget(project / ".venv", (entry / "made-in").read_text(), str(project))
    (project / ".venv" / ".installed").touch()  # newer than the bake's files: make venv is done
