"""Run the host program: python3 remote.sh COMMAND (the bundle), or python3 deploy/host COMMAND."""
import os
import sys

# Plain syntax up to here: any Python runs it, and a too-old host is named by its version.
if sys.version_info < (3, 10):  # noqa: UP036 (the host's Python, not ours)
    sys.exit("error: the host program needs Python 3.10 or newer; this is " + sys.version.split()[0])

UNPACKED = ".host"  # in APP_DIR: the bundle's host package, one folder per bundle (its sha256)


def ours(path: str) -> bool:
    """A folder this account (or root) owns that no one else may write: its code may run here."""
    info = os.lstat(path)
    return os.path.isdir(path) and not os.path.islink(path) and info.st_uid in (os.geteuid(), 0) \
        and not info.st_mode & 0o022


def unpacked(bundle: str) -> str | None:
    """The folder that APP_DIR/remote.sh's zip is unpacked into, once per bundle, so that Python
    keeps the host package's compiled modules there: from a zip it compiles every module at
    every command. None (the zip runs) for another file (the memfd of make plan), a folder
    another account could change, or one that cannot be written (a full disk)."""
    import hashlib
    import shutil
    import zipfile

    app_dir = os.path.abspath(os.environ.get("APP_DIR", "") or "/nonexistent")
    if os.path.abspath(bundle) != os.path.join(app_dir, "remote.sh"):
        return None
    with open(bundle, "rb") as handle:
        key = hashlib.sha256(handle.read()).hexdigest()[:16]
    base = os.path.join(app_dir, UNPACKED)
    here = os.path.join(base, key)
    tmp = f"{here}.{os.getpid()}.tmp"
    try:
        if not ours(app_dir):
            return None
        if not os.path.isdir(here):
            os.makedirs(base, mode=0o755, exist_ok=True)
            if not ours(base):
                return None
            with zipfile.ZipFile(bundle) as archive:  # our own members only (bundle.py)
                archive.extractall(tmp)
            os.rename(tmp, here)  # one of two racing commands wins; the other's OSError runs the zip
            for name in os.listdir(base):
                if name != key:
                    shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        return here if ours(base) and ours(here) and ours(os.path.join(here, "host")) else None
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return None


if __name__ == "__main__":
    if os.path.isdir(sys.path[0]):  # run as a folder (deploy/host), not as the bundle's zip
        sys.path[0] = os.path.dirname(os.path.abspath(sys.path[0]))
    else:
        sys.path[0] = unpacked(sys.path[0]) or sys.path[0]

    from host.cli import main

    sys.exit(main(sys.argv[1:]))
