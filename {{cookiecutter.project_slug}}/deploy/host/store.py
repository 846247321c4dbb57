"""The host's store of installed distributions, so that a wheel is unpacked and compiled once
per host, not once per app: ~/.cache/cookiecutter-flask-deploy/installed/v1/<python>/<sha256>/
holds what one wheel installed (as in a venv, with its .pyc), linked from the venv that
installed it first. A first deploy (another app, another stage, another directory) links
what it finds there instead of installing it; the running release's own venv still comes
first (host/wheels.py).

A cache and nothing more: every venv holds hard links, so removing the store loses nothing.
An entry that no venv links any more (its METADATA has one link left) goes at the next
install. Only this account's files: the store is used only when every folder of it is this
account's (or root's), writable by no one else, no link, and on the venv's file system (a
copy would save nothing). One lock for every store operation: installs of two apps meet here.
"""
import fcntl
import hashlib
import os
import shutil
import stat
import sys
from contextlib import contextmanager
from pathlib import Path

PARTS = (".cache", "cookiecutter-flask-deploy", "installed", "v1")
DONE = "installed.txt"  # in an entry, written last: `wheel dist-info`


def python_key() -> str:
    """One folder per Python: its install and version (a .pyc is only that Python's)."""
    said = f"{sys.base_prefix}\0{sys.version}\0{sys.implementation.cache_tag}"
    return f"{sys.implementation.cache_tag}-{hashlib.sha256(said.encode()).hexdigest()[:12]}"


def ours(path: Path) -> bool:
    """A real folder this account (or root) owns that no one else may write."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid in (os.geteuid(), 0) and not info.st_mode & 0o022


class Store:
    def __init__(self, base: Path):
        self.base = base

    @classmethod
    def beside(cls, venv: Path, home: str | None = None) -> "Store | None":
        """This account's store for this Python, made if need be; None where it cannot be used."""
        path = Path(home or os.path.expanduser("~"))
        if not path.is_absolute() or not ours(path):
            return None
        try:
            for part in (*PARTS, python_key()):
                path = path / part
                try:
                    os.mkdir(path, 0o700 if part == PARTS[0] else 0o755)
                except FileExistsError:
                    pass
                if not ours(path):
                    return None
            if os.stat(path).st_dev != os.stat(venv).st_dev:
                return None
        except OSError:
            return None
        return cls(path)

    @contextmanager
    def locked(self):
        fd = os.open(self.base / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self
        finally:
            os.close(fd)

    def entry(self, digest: str) -> Path:
        return self.base / digest

    def find(self, digest: str, wheel: str) -> str | None:
        """The dist-info of DIGEST's entry, when it is complete and from that wheel."""
        try:
            name, dist_info = (self.entry(digest) / DONE).read_text().split()
        except (OSError, ValueError):
            return None
        return dist_info if name == wheel else None

    def mark(self, digest: str, wheel: str, dist_info: str) -> None:
        (self.entry(digest) / DONE).write_text(f"{wheel} {dist_info}\n")

    def prune(self, metadata) -> list[str]:
        """Remove the entries no venv links (METADATA(entry, dist_info) is their marker file)
        and unfinished ones. Under the lock. Returns the sha256 of those removed."""
        gone = []
        for entry in self.base.iterdir():
            if entry.name.startswith(".") or not ours(entry):
                continue
            try:
                _, dist_info = (entry / DONE).read_text().split()
                used = os.stat(metadata(entry, dist_info)).st_nlink > 1
            except (OSError, ValueError):
                used = False
            if not used:
                shutil.rmtree(entry, ignore_errors=True)
                gone.append(entry.name)
        return gone
