"""The database's host commands: a backup on demand, and restores (database projects ship
<package>/backup.py; the app's own command line does the work, as the app's account)."""
import os
import stat
import time

from host import PACKAGE, safe
from host.cli import arg, command
from host.commands import app_cli, cmd_start, cmd_stop
from host.context import Failure, Host
from host.serve import master


def has_database(directory) -> bool:
    """Does the release keep data? (database projects ship backup.py)"""
    return any(directory.glob(f"venv/lib/python*/site-packages/{PACKAGE}/backup.py"))


def backup_database(host: Host, directory, name: str) -> str | None:
    """A backup into shared/backups/NAME.backup with the release's code; its name, or None
    when there was nothing to back up yet (the reason is printed)."""
    from host.accounts import app_dir_for
    if not has_database(directory):
        return None
    backups = app_dir_for(host, host.shared / "backups")
    target = backups / f"{name}.backup"
    done = app_cli(host, str(directory), "db-backup", "--env", host.settings.env, "--to", str(target), capture=True)
    said = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise Failure(f"the database backup failed ({said}); nothing was migrated or switched")
    host.say(f"  {said}")
    return target.name if target.is_file() else None


@command("db_backup", "a backup of the database now, named manual-<UTC time> (make db-backup)")
def cmd_db_backup(host: Host, args) -> None:
    host.need_current()
    backup = backup_database(host, host.current_dir(), f"manual-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    if backup:
        host.say(f"backup: {backup} (make db-restore BACKUP={backup} CONFIRM=1 brings it back)")


def backup_names(host: Host) -> list[str]:
    """The plain files in shared/backups/, newest first, listed through the directory's own
    descriptor (as root: never through a link planted there)."""
    try:
        fd = safe.open_dir(host.shared, "backups")
    except OSError:
        return []
    try:
        found = []
        for name in os.listdir(fd):
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                found.append((-info.st_mtime, name))
        return [name for _, name in sorted(found)]
    finally:
        os.close(fd)


@command("db_restore", "stop the app, restore a backup from shared/backups/, start it again (make db-restore)",
         arg("backup", nargs="?", default=""), recorded=True)
def cmd_db_restore(host: Host, args) -> None:
    host.need_current()
    if not has_database(host.current_dir()):
        raise Failure("this app has no database")
    backups = host.shared / "backups"
    names = backup_names(host)
    name = args.backup
    if not name or "/" in name or name.startswith("."):
        host.say(f"backups in {backups}:")
        for each in names:
            host.say(each)
        raise Failure("give BACKUP=<one of the names above>")
    if name not in names:
        for each in names:
            host.say(each)
        raise Failure(f"no backup {name} in {backups} (those above are there)")
    if not host.settings.confirm:
        raise Failure(f"db-restore replaces the database with {name} and stops the app meanwhile: run it with CONFIRM=1")
    host.take_lock("db-restore")
    directory = host.current_dir()
    if not host.settings.force:  # a backup of a schema this release does not know: refused before any change
        checked = app_cli(host, str(directory), "db-restore", "--env", host.settings.env, "--from", str(backups / name),
                          "--check", capture=True)
        if checked.returncode != 0:
            said = (checked.stdout + checked.stderr).strip().removeprefix("error: ")
            raise Failure(f"{said}; nothing was changed")
    # The data as it is now, first: a wrong BACKUP= loses nothing (kept like a manual backup).
    before = backup_database(host, directory, f"manual-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-before-restore")
    if before:
        host.say(f"backup of the data before the restore: {before}")
    try:
        cmd_stop(host)
        done = app_cli(host, str(directory), "db-restore", "--env", host.settings.env, "--from", str(backups / name),
                       capture=True)
    finally:  # also on TERM or Ctrl-C: the app is started again, on whatever the database holds
        if not master(host):
            restart_after_restore(host)
    said = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        host.say(said, err=True)
        raise Failure(f"the restore of {name} failed; the app was started again on the database as it was")
    host.say(said)


def restart_after_restore(host: Host) -> None:
    """cmd_start, once more even if a second TERM or Ctrl-C comes meanwhile."""
    try:
        cmd_start(host)
    except KeyboardInterrupt:
        cmd_start(host)
