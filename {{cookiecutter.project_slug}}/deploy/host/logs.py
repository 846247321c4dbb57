"""The app's logs: rotated by rename past a size, then USR1 to the master."""
import os
import signal
from pathlib import Path

from host.procs import master_pid


def rotation(log: Path, keep: int) -> list[tuple[Path, Path]]:
    """The renames that rotate LOG, in order: .keep-1 → .keep, …, .1 → .2, log → .1
    (the oldest, .keep, is overwritten by the first rename)."""
    moves = [(log.with_name(f"{log.name}.{n - 1}"), log.with_name(f"{log.name}.{n}")) for n in range(keep, 1, -1)]
    return [*moves, (log, log.with_name(f"{log.name}.1"))]


def rotate_dir(log_dir: Path, max_kb: int, keep: int) -> bool:
    """Rotate gunicorn.log and access.log where past MAX_KB (never through a link); any?"""
    rotated = False
    for log in (log_dir / "gunicorn.log", log_dir / "access.log"):
        try:
            if log.is_symlink() or log.stat().st_size // 1024 < max_kb:
                continue
        except FileNotFoundError:
            continue
        log.with_name(f"{log.name}.{keep}").unlink(missing_ok=True)
        for source, target in rotation(log, keep):
            if source.exists() and not source.is_symlink():
                os.replace(source, target)
        rotated = True
    return rotated


def rotate(host) -> None:
    """Rename (gunicorn keeps writing to the renamed file), then USR1, on which gunicorn and
    its workers reopen their logs: every line lands in the old file or the new one."""
    settings = host.settings
    if rotate_dir(host.log_dir, settings.log_max_kb, settings.log_keep):
        pid = master_pid(host.pidfile, host.releases)
        if pid:
            os.kill(pid, signal.SIGUSR1)
