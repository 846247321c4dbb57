"""Database backups and migrations for the host: `{{ cookiecutter.package_name }} db-backup --to FILE`,
`db-restore --from FILE`, and `migrate`, the deploy's release command, which takes a backup
before it applies any migration (none when the database is at the newest one already).

remote.sh runs `migrate` as the release command (the backup goes where it says, into
shared/backups/<release>.backup), `db-backup` on `make db-backup`, and `db-restore` on
`make db-restore`. SQLite: the online backup API, consistent while the
app keeps writing. PostgreSQL: `pg_dump --format=custom` and `pg_restore --clean`, which
must be on the host (Debian: postgresql-client); without them a backup is skipped with a
warning, never silently.
"""
from __future__ import annotations

import ast
import os
import shutil
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

from .config import load_config


class BackupError(Exception):
    """One sentence for the user."""


def database_url(env: str) -> str:
    return str(load_config(env)["database"]["url"])


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """pg_dump and pg_restore speak libpq: postgresql+psycopg://… becomes postgresql://…,
    and the password goes into their environment (PGPASSWORD), never onto their command
    line, which every account on the host can read (ps, /proc/*/cmdline)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    # URL.set() takes None for "unchanged": _replace (a NamedTuple's) is what drops the password.
    return parsed.set(drivername="postgresql")._replace(password=None).render_as_string(hide_password=False), env


def backup(env: str, target: Path) -> str:
    """Write a backup of env's database to target; returns what was done, in words."""
    from sqlalchemy.engine import make_url

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
    dbname, env = _libpq(url)
    done = subprocess.run(["pg_dump", "--format=custom", f"--file={target}", f"--dbname={dbname}"],
                          capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        target.unlink(missing_ok=True)
        raise BackupError(f"pg_dump failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return f"backed up {parsed.render_as_string(hide_password=True)} to {target}"


NIGHTLY = "nightly-"  # the nightly job's backups: [deploy] keep_backups counts these, and only these


def nightly(env: str, backups: Path, keep: int, now: time.struct_time | None = None) -> str:
    """The nightly job ([schedule:backup]): backups/nightly-<UTC time>.backup, then the
    newest KEEP of the nightly ones kept. Those taken before a migration (<release>.backup)
    or a restore keep their own rules: they are never counted or removed here."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", now or time.gmtime())
    said = backup(env, backups / f"{NIGHTLY}{stamp}.backup")
    return "\n".join([said, *(f"removed {path.name} (keep_backups = {keep})" for path in prune_nightly(backups, keep))])


def prune_nightly(backups: Path, keep: int) -> list[Path]:
    """Remove all but the newest KEEP nightly backups (their names sort by time); the removed."""
    found = sorted(path for path in backups.glob(f"{NIGHTLY}*.backup") if path.is_file() and not path.is_symlink())
    gone = found[:-keep] if keep > 0 else found
    for path in gone:
        path.unlink()
    return gone


def migrate(env: str, backup_to: Path | None) -> int:
    """Apply pending migrations to env's database, after a backup to backup_to (when given).
    With none pending, nothing is backed up; a SQLite database at the newest migration is
    told apart without even importing the app (a redeploy's release command in 0.1 s)."""
    url = database_url(env)
    if sqlite_at_head(url):
        print("database at the newest migration: nothing to migrate, no backup taken")
        return 0
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from flask_migrate import upgrade

    from . import create_app
    from .models import MIGRATIONS, db

    with create_app(env).app_context():
        heads = set(ScriptDirectory(MIGRATIONS).get_heads())
        current: set[str] = set()
        database = _sqlite_file(url)
        if database is None or Path(database).exists():  # connecting would create the file
            with db.engine.connect() as connection:
                current = set(MigrationContext.configure(connection).get_current_heads())
        if current == heads:
            print("database at the newest migration: nothing to migrate, no backup taken")
            return 0
        if backup_to is not None:
            print(backup(env, backup_to), flush=True)
        upgrade()  # prints alembic's log; exits 1 (SystemExit) when a migration fails
    return 0


def _sqlite_file(url: str) -> str | None:
    """The file of a plain sqlite:/// URL (what [database] url allows), else None."""
    if not url.startswith("sqlite:///") or "?" in url:
        return None
    return url[len("sqlite:///"):] or None


def sqlite_at_head(url: str) -> bool:
    """True only when a SQLite database's Alembic revisions are the heads of
    migrations/versions/: the test `upgrade` makes, done with sqlite3 and the migration
    files' literal `revision` and `down_revision`, without SQLAlchemy or Alembic. Anything
    unusual (a computed revision, no file or version table, another database) answers
    False, and migrate asks Alembic itself."""
    database = _sqlite_file(url)
    if database is None or not Path(database).is_file():
        return False
    known = migration_revisions()
    if known is None:
        return False
    revisions, parents = known
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
            current = {row[0] for row in connection.execute("SELECT version_num FROM alembic_version")}
    except sqlite3.Error:
        return False
    return bool(current) and current == revisions - parents


def migration_revisions() -> tuple[set[str], set[str]] | None:
    """Every revision in migrations/versions/, and every one some other revision follows,
    from the files' literal `revision` and `down_revision`; None when one is not literal."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (Path(__file__).parent / "migrations" / "versions").glob("*.py"):
        found = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else getattr(node, "target", None)
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision") and node.value is not None:
                try:
                    found[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    return None
        if not isinstance(found.get("revision"), str):
            return None
        revisions.add(found["revision"])
        down = found.get("down_revision")
        parents.update([down] if isinstance(down, str) else down or ())
    return revisions, parents


def backup_revisions(url: str, source: Path) -> set[str]:
    """The schema revisions (Alembic's alembic_version) a backup file holds: none for a
    database no migration has touched."""
    if url.startswith("sqlite"):
        try:
            with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as connection:
                return {row[0] for row in connection.execute("SELECT version_num FROM alembic_version")}
        except sqlite3.Error as exc:
            if "no such table" in str(exc):
                return set()
            raise BackupError(f"{source} is not a SQLite backup ({exc})") from None
    if shutil.which("pg_restore") is None:
        raise BackupError("pg_restore is not installed on this host (apt-get install postgresql-client)")
    listed = subprocess.run(["pg_restore", "--data-only", "--table=alembic_version", "--file=-", str(source)],
                            capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        raise BackupError(f"{source} is not a pg_dump backup ({listed.stderr.strip()[-200:]})")
    lines, revisions, copying = listed.stdout.splitlines(), set(), False
    for line in lines:
        if line.startswith("COPY ") and "alembic_version" in line:
            copying = True
        elif copying and line == "\\.":
            copying = False
        elif copying and line:
            revisions.add(line.split("\t")[0])
    return revisions


def live_revisions(env: str) -> set[str] | None:
    """The schema revisions of the database of ENV now, read only (make plan); None when it
    does not exist yet."""
    url = database_url(env)
    if url.startswith("sqlite"):
        database = _sqlite_file(url)
        if database is None or not Path(database).is_file():
            return None
        return backup_revisions(url, Path(database))
    from sqlalchemy import create_engine, exc, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SET TRANSACTION READ ONLY"))
            try:
                return {row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))}
            except exc.ProgrammingError:  # no alembic_version: no migration ran yet
                return set()
    except exc.SQLAlchemyError as failed:
        raise BackupError(f"cannot read the database's revision: {str(failed).splitlines()[0]}") from None
    finally:
        engine.dispose()


def check_restore(env: str, source: Path) -> str:
    """Refuse a backup whose schema revision this release's migrations do not know (a newer
    release's data: this code would run on a schema it was not written for)."""
    if not source.is_file():
        raise BackupError(f"no backup {source}")
    known = migration_revisions()
    found = backup_revisions(database_url(env), source)
    unknown = sorted(found - known[0]) if known is not None else []
    if unknown:
        raise BackupError(f"{source.name} holds schema revision {', '.join(unknown)}, which this release's "
                          "migrations do not know (a newer release's data?): restore it with FORCE=1 if you mean it")
    return f"{source.name}: schema revision {', '.join(sorted(found)) or 'none'}, known to this release"


def restore(env: str, source: Path) -> str:
    if not source.is_file():
        raise BackupError(f"no backup {source}")
    from sqlalchemy.engine import make_url

    url = database_url(env)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with sqlite3.connect(source) as saved, sqlite3.connect(parsed.database) as live:
            saved.backup(live)
        return f"restored {parsed.database} from {source}"
    if shutil.which("pg_restore") is None:
        raise BackupError("pg_restore is not installed on this host (apt-get install postgresql-client)")
    dbname, env = _libpq(url)
    done = subprocess.run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction",
                           f"--dbname={dbname}", str(source)], capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise BackupError(f"pg_restore failed: {done.stderr.strip()[-300:]}")
    return f"restored {parsed.render_as_string(hide_password=True)} from {source}"
