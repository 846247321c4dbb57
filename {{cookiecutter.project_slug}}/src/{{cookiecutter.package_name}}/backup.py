"""Database backups for the host: `{{ cookiecutter.package_name }} db-backup --to FILE`, `db-restore --from FILE`.

remote.sh takes one before every migration (the release command) and on `make db-backup`,
and restores one on `make db-restore`. SQLite: the online backup API, consistent while the
app keeps writing. PostgreSQL: `pg_dump --format=custom` and `pg_restore --clean`, which
must be on the host (Debian: postgresql-client); without them a backup is skipped with a
warning, never silently.
"""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

from .config import load_config


class BackupError(Exception):
    """One sentence for the user."""


def database_url(env: str) -> str:
    return str(load_config(env)["database"]["url"])


def _libpq_url(url: str) -> str:
    """pg_dump speaks libpq: postgresql+psycopg://… becomes postgresql://…"""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def backup(env: str, target: Path) -> str:
    """Write a backup of env's database to target; returns what was done, in words."""
    url = database_url(env)
    parsed = make_url(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "sqlite":
        source = parsed.database
        if not source or source == ":memory:":
            raise BackupError(f"{url} is not a database file: nothing to back up")
        if not Path(source).exists():
            return f"no backup: {source} does not exist yet (the first migration creates it)"
        with sqlite3.connect(source) as live, sqlite3.connect(target) as copy:
            live.backup(copy)
        return f"backed up {source} to {target}"
    if shutil.which("pg_dump") is None:
        return "warning: no backup: pg_dump is not installed on this host (apt-get install postgresql-client)"
    done = subprocess.run(["pg_dump", "--format=custom", f"--file={target}", f"--dbname={_libpq_url(url)}"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        target.unlink(missing_ok=True)
        raise BackupError(f"pg_dump failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return f"backed up {parsed.render_as_string(hide_password=True)} to {target}"


def restore(env: str, source: Path) -> str:
    if not source.is_file():
        raise BackupError(f"no backup {source}")
    url = database_url(env)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with sqlite3.connect(source) as saved, sqlite3.connect(parsed.database) as live:
            saved.backup(live)
        return f"restored {parsed.database} from {source}"
    if shutil.which("pg_restore") is None:
        raise BackupError("pg_restore is not installed on this host (apt-get install postgresql-client)")
    done = subprocess.run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction",
                           f"--dbname={_libpq_url(url)}", str(source)], capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"pg_restore failed: {done.stderr.strip()[-300:]}")
    return f"restored {parsed.render_as_string(hide_password=True)} from {source}"
