"""releases/: their order, the one before current, what a prune removes, and the deploy
lock (mkdir is atomic; the holder's pid tells a stale lock apart)."""
import fcntl
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from host import safe
from host.procs import running

# In the app's directory: the releases a deploy pruned, moved here by one rename each and
# deleted once the deploy has answered (thousands of files: half a second on the deploy's path).
TRASH = ".trash"
EMPTY_TRASH = "import shutil, sys; [shutil.rmtree(path, ignore_errors=True) for path in sys.argv[1:]]"


def release_time(release_id: str) -> str:
    """Ids end in a UTC timestamp (<version>-20261201T093620Z); versions do not sort."""
    return release_id.rsplit("-", 1)[-1]


@dataclass(frozen=True)
class Releases:
    """What releases/ holds: finished ones oldest first, and the unfinished and refused."""
    finished: list[str]
    unfinished: list[str]
    refused: list[str]

    @classmethod
    def read(cls, releases: Path) -> "Releases":
        finished, unfinished, refused = [], [], []
        try:
            entries = sorted(entry.name for entry in os.scandir(releases) if entry.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            entries = []
        for name in entries:
            if (releases / name / ".unfinished").exists():
                unfinished.append(name)
            elif (releases / name / ".refused").exists():
                refused.append(name)
            else:
                finished.append(name)
        return cls(sorted(finished, key=release_time), unfinished, refused)

    def previous(self, current: str | None) -> str | None:
        """The newest finished release older than current (a rollback's target)."""
        if current not in self.finished:
            return None
        index = self.finished.index(current)
        return self.finished[index - 1] if index > 0 else None

    def to_prune(self, current: str | None, keep: int) -> list[str]:
        """Beyond the newest KEEP finished ones, never current or the one before it; every
        unfinished install; every refused release but current."""
        protected = {current, self.previous(current)}
        old = self.finished[:-keep] if keep > 0 else list(self.finished)
        return [*self.unfinished, *(r for r in self.refused if r != current),
                *(r for r in old if r not in protected)]


def current_release(app_dir: Path) -> str | None:
    link = app_dir / "current"
    return Path(os.readlink(link)).name if link.is_symlink() else None


def backups_to_prune(backups: list[str], oldest_kept: str | None) -> list[str]:
    """A release's backup goes with it: those of releases older than the oldest one kept
    (manual ones stay; a refused release's backup stays until then)."""
    if oldest_kept is None:
        return []
    return [name for name in backups if name.endswith(".backup") and not name.startswith("manual-")
            and release_time(name.removesuffix(".backup")) < release_time(oldest_kept)]


def remove(path: Path) -> None:
    """A file, link or directory, never following a link."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def cacheable(name: str) -> bool:
    """A release's file the host keeps in state/wheels/ by sha256, so that the next upload
    leaves it out (deploy/pack.py lean): every wheel, and the host program's bundle."""
    return name.startswith("wheels/") or name == "deploy/remote.sh"


def referenced_wheels(releases: Path) -> set[str]:
    """The sha256 of every cached file a release still on the host brought."""
    keep = set()
    for sums in releases.glob("*/SHA256SUMS"):
        for line in sums.read_text().splitlines():
            digest, _, name = line.partition("  ")
            if cacheable(name):
                keep.add(digest)
    return keep


def plain_dir(path: Path) -> bool:
    """A directory that is no symlink: prune never deletes through a link someone planted."""
    return path.is_dir() and not path.is_symlink()


def discard(app: Path, path: Path) -> None:
    """PATH, a release directory, out of releases/ at once: renamed into the trash (same file
    system), else removed here."""
    trash = app / TRASH
    try:
        trash.mkdir(mode=0o700, exist_ok=True)
        if plain_dir(trash):
            os.rename(path, trash / f"{path.name}.{os.getpid()}")
            return
    except OSError:
        pass
    remove(path)


def empty_trash(app: Path, wait: bool = False) -> None:
    """Delete what is in the trash, by a process of its own that outlives this command unless
    WAIT: the deploy answers and its ssh session ends meanwhile. rmtree never follows a link."""
    trash = app / TRASH
    if not plain_dir(trash):
        return
    entries = [entry.path for entry in os.scandir(trash)]
    if not entries:
        return
    if wait:
        for entry in entries:
            remove(Path(entry))
        return
    try:
        subprocess.Popen([sys.executable, "-I", "-S", "-c", EMPTY_TRASH, *entries], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        pass  # no process to spare: the next deploy's deletes it; this one has deployed


def prune(app: Path, keep: int) -> None:
    """Keep the newest KEEP finished releases, never current or the one before; drop unfinished
    work, refused releases, the backups of releases gone, wheels no release brought and
    uploads older than an hour; never through a link planted in shared/ (the backups are
    listed and removed through the directory's own descriptor)."""
    releases_dir = app / "releases"
    releases, current = Releases.read(releases_dir), current_release(app)
    previous = app / "previous"  # what served before current (make rollback may make it the newer one)
    bridged = Path(os.readlink(previous)).name if previous.is_symlink() else None
    for release in releases.to_prune(current, keep):
        if release != bridged:
            discard(app, releases_dir / release)
    left = Releases.read(releases_dir)
    try:
        backups = safe.open_dir(app / "shared", "backups")
    except OSError:
        backups = None  # none yet, or not a directory of ours
    if backups is not None:
        try:
            for name in backups_to_prune(sorted(os.listdir(backups)), (left.finished or [None])[0]):
                safe.unlink_in(backups, name)
        finally:
            os.close(backups)
    wheels = app / "state" / "wheels"
    if plain_dir(wheels):
        keep = referenced_wheels(releases_dir)
        for entry in os.scandir(wheels):
            if not entry.name.startswith(".") and entry.name not in keep and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
    incoming, hour_ago = app / ".incoming", time.time() - 3600
    if plain_dir(incoming):
        for entry in os.scandir(incoming):
            if entry.stat(follow_symlinks=False).st_mtime < hour_ago:
                remove(Path(entry.path))


def read_release(path: Path) -> dict[str, str]:
    """The RELEASE file: name=…, version=…, python=>=3.10, target=…"""
    pairs = (line.partition("=") for line in path.read_text().splitlines())
    return {key: value for key, _, value in pairs if key}


def lock_info(lock: Path) -> dict[str, str]:
    try:
        return read_release(lock / "info")
    except OSError:
        return {}


def describe(info: dict[str, str]) -> str:
    return " ".join(f"{key}={value}" for key, value in info.items()) or "no details"


def holder_alive(info: dict[str, str]) -> bool:
    """Is the lock's holder a live host script? A pid alone proves nothing: pids are reused."""
    pid = info.get("pid", "")
    if not pid.isdigit():
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"remote.sh" in cmdline and running(int(pid))


def take_lock(lock: Path, info: dict[str, str]) -> str | None:
    """Take LOCK for INFO's holder; None when taken, else the sentence that refuses it.

    A fresh lock is an atomic mkdir. A stale one (its holder dead) is taken over under an
    flock on LOCK.flock (the kernel drops it when its taker dies, so it is never stale
    itself): the taker checks the lock still holds what it judged stale, renames it away
    and makes its own with mkdir. Of two takers, one waits out the flock and then finds the
    lock changed, and a fresh taker racing the rename loses to mkdir: one of them wins."""
    text = "".join(f"{key}={value}\n" for key, value in info.items())
    try:
        lock.mkdir()
    except FileExistsError:
        held = lock_info(lock)
        # No pid: its taker is writing the info now, or someone holds it by hand: held.
        if not held.get("pid", "").isdigit() or holder_alive(held):
            return (f"another deploy holds the lock on {lock.parent} ({describe(held)}); "
                    "wait for it, or run make unlock if it is dead")
        refused = take_over(lock, held)
        if refused:
            return refused
    tmp = lock / ".info.tmp"
    try:
        tmp.write_text(text)
        os.replace(tmp, lock / "info")
    except OSError:  # a full disk, most likely: no lock without its holder's info
        remove(lock)
        raise
    return None


def take_over(lock: Path, held: dict[str, str]) -> str | None:
    """Replace the stale LOCK, which held HELD, by a fresh one of ours (see take_lock)."""
    fd = os.open(lock.with_name(lock.name + ".flock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return f"another deploy is taking over the stale lock on {lock.parent} just now"
        if lock_info(lock) != held:
            return f"another deploy took the lock on {lock.parent} just now"
        print(f"taking over a stale deploy lock ({describe(held)})", flush=True)
        stale = lock.with_name(f"{lock.name}.stale.{os.getpid()}")
        try:
            os.rename(lock, stale)
        except FileNotFoundError:
            return f"another deploy took the lock on {lock.parent} just now"
        remove(stale)
        try:
            lock.mkdir()
        except FileExistsError:
            return f"another deploy took the lock on {lock.parent} just now"
        return None
    finally:
        os.close(fd)  # drops the flock
