"""Files in shared/ as root: no link followed, at any depth, and no fifo, device or hard link
taken for a file. In a root deploy the app's account owns shared/ and can plant any of those
in place of what root reads, writes, chowns or deletes there (shared/ itself is safe: it sits
in the app's directory, which is root's). Every path is walked from a directory descriptor,
each component opened with O_NOFOLLOW. Unprivileged deploys use the same calls: they cost
nothing and keep one code path."""
import errno
import os
import stat
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Unsafe(OSError):
    """Something was planted where a file or directory of ours belongs."""

    def __init__(self, path: Path, what: str):
        super().__init__(errno.EPERM, f"{what}: the deploy will not follow or use it; remove it", str(path))


def open_dir(top: Path, relative: str = "") -> int:
    """TOP, then each directory of RELATIVE below it, none a link; the last one's descriptor."""
    fd = os.open(top, DIR_FLAGS)
    try:
        for part in [p for p in relative.split("/") if p]:
            if part == "..":
                raise Unsafe(top / relative, "a path with ..")
            try:
                below = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Unsafe(top / relative, "a link or a file where a directory belongs") from None
                raise
            os.close(fd)
            fd = below
    except BaseException:
        os.close(fd)
        raise
    return fd


def split(relative: str) -> tuple[str, str]:
    parent, _, name = relative.rpartition("/")
    return parent, name


def open_file(top: Path, relative: str, flags: int, mode: int = 0o600, owner: tuple[int, int] | None = None) -> int:
    """Open TOP/RELATIVE (a plain file, one link to it: a hard link to another file would be
    that file); with O_CREAT it may be made, with MODE. OWNER (uid, gid) gets a file we write."""
    parent, name = split(relative)
    dir_fd = open_dir(top, parent)
    try:
        try:  # a fifo or device is refused before it is opened (opening one can block or act)
            seen = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not (stat.S_ISREG(seen.st_mode) or stat.S_ISLNK(seen.st_mode)):
                raise Unsafe(top / relative, "not a plain file")
        except FileNotFoundError:
            if not flags & os.O_CREAT:
                raise
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY, mode, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Unsafe(top / relative, "a link where a file belongs") from None
            raise
    finally:
        os.close(dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unsafe(top / relative, "not a plain file")
        if info.st_nlink != 1 and flags & (os.O_WRONLY | os.O_RDWR):
            raise Unsafe(top / relative, "a hard link")
        os.set_blocking(fd, True)
        if owner and flags & (os.O_WRONLY | os.O_RDWR) and (info.st_uid, info.st_gid) != owner:
            os.fchown(fd, *owner)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_text(top: Path, relative: str, limit: int = 1 << 20) -> str | None:
    """The text of a plain file, or None when there is none (or something else is there)."""
    try:
        fd = open_file(top, relative, os.O_RDONLY)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read(limit).decode(errors="replace")


def write_text(top: Path, relative: str, text: str, mode: int = 0o600, owner: tuple[int, int] | None = None) -> None:
    """Replace TOP/RELATIVE with TEXT atomically: a new file beside it, renamed over it."""
    parent, name = split(relative)
    dir_fd = open_dir(top, parent)
    tmp = f".{name}.{os.getpid()}.tmp"
    try:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
        with os.fdopen(fd, "w") as handle:
            if owner:
                os.fchown(handle.fileno(), *owner)
            handle.write(text)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def unlink(top: Path, relative: str) -> None:
    """Remove TOP/RELATIVE if it is there (a link goes itself, never what it names)."""
    parent, name = split(relative)
    try:
        dir_fd = open_dir(top, parent)
    except (FileNotFoundError, Unsafe):
        return  # no such directory of ours: nothing of ours to remove
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise Unsafe(top / relative, "a directory where a file belongs") from None
    finally:
        os.close(dir_fd)


def make_dir(top: Path, relative: str, mode: int = 0o755, owner: tuple[int, int] | None = None) -> None:
    """TOP/RELATIVE as a directory (each level made if missing, none a link), OWNER's."""
    parts = [p for p in relative.split("/") if p]
    for depth in range(1, len(parts) + 1):
        parent, name = "/".join(parts[:depth - 1]), parts[depth - 1]
        dir_fd = open_dir(top, parent)
        try:
            try:
                os.mkdir(name, mode, dir_fd=dir_fd)
            except FileExistsError:
                pass
            fd = open_dir(top, "/".join(parts[:depth]))
            try:
                info = os.fstat(fd)
                if owner and (info.st_uid, info.st_gid) != owner:
                    os.fchown(fd, *owner)
            finally:
                os.close(fd)
        finally:
            os.close(dir_fd)


def unlink_in(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def chown_root_leftovers(top: Path, uid: int, gid: int, from_uid: int = 0) -> list[str]:
    """What root made in TOP and below (an older deploy, a file root wrote) becomes UID's:
    only root-owned plain files with one link and directories, opened without following a
    link, each changed through its own descriptor (a name swapped meanwhile changes nothing
    else). Anything else there (the app's own, a link, a fifo) is left as it is. FROM_UID:
    whose leftovers (root's); returns the paths changed, relative to TOP."""
    changed = []
    top_fd = os.open(top, DIR_FLAGS)
    try:
        if os.fstat(top_fd).st_uid == from_uid:
            os.fchown(top_fd, uid, gid)
            changed.append(".")
    finally:
        os.close(top_fd)
    for root, dirs, files, dir_fd in os.fwalk(top, follow_symlinks=False):
        for name in (*dirs, *files):
            try:
                seen = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if seen.st_uid != from_uid or not (stat.S_ISDIR(seen.st_mode) or stat.S_ISREG(seen.st_mode)):
                    continue  # not root's, or a link, fifo, socket or device: never opened
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                             dir_fd=dir_fd)
            except OSError:
                continue  # a link (ELOOP), gone, or not ours to open
            try:
                info = os.fstat(fd)
                plain = stat.S_ISDIR(info.st_mode) or (stat.S_ISREG(info.st_mode) and info.st_nlink == 1)
                if plain and info.st_uid == from_uid:
                    os.fchown(fd, uid, gid)
                    changed.append(os.path.relpath(os.path.join(root, name), top))
            finally:
                os.close(fd)
    return changed
