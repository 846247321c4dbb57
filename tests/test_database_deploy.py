"""A database the deploy looks after, for real: the default bake (SQLite) and a PostgreSQL
bake deployed over a private sshd, migrations as the release command, data that outlives
redeploys, rollbacks and prunes, a backup before every migration, db-backup and
db-restore, a migration that fails. The baked projects' own database tests are in
test_database.py.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import bake, missing
from harness.app import new_app, output
from harness.venvs import make_venv

# Changes no table (the project's own tests compare models and migrations): data only.
DATA_MIGRATION = '''"""touch every note"""
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    op.execute("UPDATE note SET text = text")


def downgrade():
    pass
'''

# Passes the project's own tests, fails on the host: as a migration does that meets prod data.
BROKEN_MIGRATION = '''"""a migration that fails on the host only"""
import os

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    if os.environ.get("MY_FLASK_APP_ENV") == "prod":
        op.execute("SELECT * FROM no_such_table")


def downgrade():
    pass
'''


def notes(app) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{app.port}/notes", timeout=10) as response:
        return [note["text"] for note in json.load(response)["notes"]]


def add_note(app, text: str) -> None:
    """As an API client posts: JSON needs no CSRF token (a form post does: the app's own tests)."""
    request = urllib.request.Request(f"http://127.0.0.1:{app.port}/notes", data=json.dumps({"text": text}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


def backups(app) -> list[str]:
    folder = app.dir / "shared" / "backups"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def app(baked_project, sshd_host, tmp_path_factory, request):
    """The default bake (sqlite), deployed."""
    deployed = new_app(baked_project, sshd_host, tmp_path_factory, request)
    result = deployed.deploy()
    assert "release_command:" in result.stdout and "Running upgrade  -> 0001" in output(result), output(result)
    return deployed


def test_sqlite_lives_in_shared_and_outlives_redeploys_rollbacks_and_prunes(app):
    database = app.dir / "shared" / "data" / "my_flask_app.sqlite3"
    assert database.is_file()
    add_note(app, "one")
    first = app.current()
    result = app.deploy()
    assert notes(app) == ["one"]
    second = app.current()
    # no migration pending: `migrate` says so, and no backup is taken
    assert "nothing to migrate, no backup taken" in result.stdout, output(result)
    assert f"{second}.backup" not in backups(app)
    add_note(app, "two")
    app.make("rollback")
    assert app.current() == first and notes(app) == ["one", "two"]
    for _ in range(2):  # KEEP_RELEASES=2
        app.make("deploy", KEEP_RELEASES="2")
    assert notes(app) == ["one", "two"]
    kept = {p.name for p in (app.dir / "releases").iterdir()}
    assert len(kept) == 2 and second not in kept
    assert database.is_file()


def test_a_migration_is_backed_up_first_and_the_backup_pruned_with_its_release(baked_project, sshd_host,
                                                                               tmp_path_factory, request):
    app = new_app(baked_project, sshd_host, tmp_path_factory, request)
    app.deploy()
    add_note(app, "before 0002")
    database = app.dir / "shared" / "data" / "my_flask_app.sqlite3"
    extra = baked_project / "src" / "my_flask_app" / "migrations" / "versions" / "0002_touch.py"
    extra.write_text(DATA_MIGRATION)
    try:
        result = app.deploy()
        migrated = app.current()
        assert "Running upgrade 0001 -> 0002" in output(result), output(result)
        assert re.search(rf"backed up {re.escape(str(database))} to .*/shared/backups/{migrated}\.backup", result.stdout)
        assert backups(app) == [f"{migrated}.backup"]
        with sqlite3.connect(app.dir / "shared" / "backups" / f"{migrated}.backup") as saved:  # taken before 0002
            assert saved.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
        again = app.deploy()
        assert "nothing to migrate" in again.stdout and backups(app) == [f"{migrated}.backup"]
        for _ in range(2):  # KEEP_RELEASES=2: the migrated release goes, and its backup with it
            app.make("deploy", KEEP_RELEASES="2")
        assert migrated not in {p.name for p in (app.dir / "releases").iterdir()}
        assert backups(app) == [] and notes(app) == ["before 0002"]
    finally:
        extra.unlink()


def test_db_backup_and_a_confirmed_restore_bring_the_data_back(app):
    app.make("start")
    before = notes(app)
    made = app.make("db-backup").stdout
    name = re.search(r"^backup: (manual-\d{8}T\d{6}Z\.backup) ", made, re.M)[1]
    add_note(app, "after the backup")
    refused = app.make("db-restore", check=False, BACKUP=name)
    assert refused.returncode != 0 and "CONFIRM=1" in refused.stderr
    assert notes(app) == [*before, "after the backup"]  # nothing happened
    restored = app.make("db-restore", BACKUP=name, CONFIRM="1")
    assert "stopped (was pid" in restored.stdout and "started release" in restored.stdout
    assert notes(app) == before
    assert "db_restore" in app.make("history").stdout
    missing_one = app.make("db-restore", check=False, BACKUP="nope.backup", CONFIRM="1")
    assert missing_one.returncode != 0 and "no backup nope.backup" in missing_one.stderr


def processes(*words: str) -> list[int]:
    """The pids whose command line holds every one of WORDS."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and all(word in line for word in words):
            found.append(int(entry.name))
    return found


def wait_for_process(*words: str, seconds: float = 60) -> int:
    """A live process with WORDS: one whose command line still reads (not one mid-exec, as
    Debian's pg_wrapper is when it becomes the real pg_dump, or one that just exited)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [pid for pid in processes(*words) if all(word in cmdline(pid) for word in words)]
        if found:
            return found[0]
        time.sleep(0.01)
    raise AssertionError(f"no process with {words} within {seconds}s")


def test_db_restore_backs_up_first_and_refuses_an_unknown_schema_unless_forced(app):
    app.make("start")
    name = re.search(r"^backup: (manual-\S+\.backup) ", app.make("db-backup").stdout, re.M)[1]
    add_note(app, "after the backup")
    data = notes(app)
    restored = app.make("db-restore", BACKUP=name, CONFIRM="1")
    before = re.search(r"^backup of the data before the restore: (manual-\d{8}T\d{6}Z-before-restore\.backup)$",
                       restored.stdout, re.M)
    assert before and before[1] in backups(app), output(restored)
    with sqlite3.connect(app.dir / "shared" / "backups" / before[1]) as saved:  # the data a wrong BACKUP= replaced
        assert [row[0] for row in saved.execute("SELECT text FROM note ORDER BY id")] == data
    # A newer release's data: its schema revision is unknown to this release's migrations.
    future = app.dir / "shared" / "backups" / "manual-future.backup"
    future.write_bytes((app.dir / "shared" / "backups" / name).read_bytes())
    with sqlite3.connect(future) as saved:
        saved.execute("UPDATE alembic_version SET version_num = '0099_future'")
    serving, master = notes(app), app.pid()
    refused = app.make("db-restore", check=False, BACKUP=future.name, CONFIRM="1")
    assert refused.returncode != 0 and ("manual-future.backup holds schema revision 0099_future, which this release's "
                                        "migrations do not know") in refused.stderr and "FORCE=1" in refused.stderr
    assert "nothing was changed" in refused.stderr and "Traceback" not in output(refused)
    assert app.pid() == master and notes(app) == serving  # never stopped
    forced = app.make("db-restore", BACKUP=future.name, CONFIRM="1", FORCE="1")
    assert "started release" in forced.stdout, output(forced)
    app.make("db-restore", BACKUP=before[1], CONFIRM="1")  # the data as it was, for the tests after this one
    assert notes(app) == data
    assert app.make("db-restore", check=False, BACKUP=name, CONFIRM="1", FORCE="yes").returncode == 2


def test_an_interrupted_db_restore_leaves_the_app_started(app, tmp_path):
    app.make("start")
    data = notes(app)
    name = re.search(r"^backup: (manual-\S+\.backup) ", app.make("db-backup").stdout, re.M)[1]
    # FORCE=1: no revision check first (the test above's), so the one restore process is the restore.
    proc = app.popen_make("db-restore", f"BACKUP={name}", "CONFIRM=1", "FORCE=1", log=tmp_path / "restore.log")
    try:
        # The restore itself (the app's own command), held still; then TERM to the host program.
        restore = wait_for_process("/venv/bin/my_flask_app", "db-restore", "--from", name)
        os.kill(restore, signal.SIGSTOP)
        # the host program is Python (the local ssh client's command line names remote.sh too)
        (host_program,) = [pid for pid in processes(f"{app.dir}/remote.sh", "db_restore")
                           if "python" in cmdline(pid).split()[0]]
        os.kill(host_program, signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    said = (tmp_path / "restore.log").read_text()
    assert proc.returncode != 0 and "started release" in said, said
    assert app.release() == app.current() and notes(app) == data
    assert processes("/venv/bin/my_flask_app", "db-restore", "--from", name) == []  # not left stopped


def test_a_failing_migration_keeps_the_old_release_and_names_the_backup(app, baked_project):
    app.make("start")
    serving, data = app.current(), notes(app)
    broken = baked_project / "src" / "my_flask_app" / "migrations" / "versions" / "0002_broken.py"
    broken.write_text(BROKEN_MIGRATION)
    try:
        result = app.deploy(check=False)
    finally:
        broken.unlink()
    assert result.returncode != 0
    named = re.search(r"make db-restore BACKUP=(\S+\.backup) CONFIRM=1", result.stderr)
    assert named and "the release command" in result.stderr, output(result)
    assert named[1] in backups(app)
    assert app.current() == serving and app.release() == serving and notes(app) == data
    last = app.make("history").stdout.splitlines()[-1].split()
    assert last[2] == "deploy" and last[5] == "failed"


def test_sqlite_is_refused_for_several_hosts_before_anything_changes(app):
    started = time.monotonic()
    result = app.make("deploy", check=False, REMOTE_HOSTS="web1 web2", REMOTE_HOST=None)
    assert result.returncode != 0
    assert "SQLite, a file on each host" in result.stderr and "PostgreSQL" in result.stderr
    assert "==>" not in result.stdout and time.monotonic() - started < 10


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_project(tmp_path_factory) -> Path:
    project = bake(tmp_path_factory.mktemp("pg"), database="postgresql")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    make_venv(project, tmp_path_factory)
    return project


@pytest.fixture(scope="module")
def postgres(pg_project):
    """A real PostgreSQL server (Debian's postgresql package), as an ordinary user, on loopback."""
    sys.path.insert(0, str(pg_project / "tests"))
    try:
        from pg_server import INSTALL_HINT, PostgresServer, find_bin_dir
    finally:
        sys.path.pop(0)
    bin_dir = find_bin_dir()
    if bin_dir is None:
        missing(INSTALL_HINT)
    with PostgresServer(bin_dir) as server:
        yield server


def test_postgresql_url_set_on_the_host_migrates_and_keeps_data(pg_project, postgres, sshd_host,
                                                                 tmp_path_factory, request):
    app = new_app(pg_project, sshd_host, tmp_path_factory, request)
    url = f"postgresql://postgres:pw-{time.time_ns()}@127.0.0.1:{postgres.port}/postgres"
    assert url not in (pg_project / "config" / "prod.ini").read_text()
    app.make("copy")  # config-set checks the value with the app's own schema: a release first
    subprocess.run(["make", "--no-print-directory", "config-set", "SETTING=database.url",
                    *(f"{k}={v}" for k, v in app.vars.items())], cwd=pg_project, input=url + "\n",
                   check=True, capture_output=True, text=True)
    result = app.deploy()
    assert "Running upgrade  -> 0001" in output(result), output(result)
    assert f"{app.current()}.backup" in backups(app), result.stdout  # pg_dump, before the migration
    add_note(app, "kept in postgres")
    again = app.deploy()
    assert notes(app) == ["kept in postgres"]
    assert "nothing to migrate, no backup taken" in again.stdout and len(backups(app)) == 1, output(again)
    planned = app.make("plan").stdout  # the revision read from PostgreSQL, read only
    assert "migrations: none pending (the database is at 0001)" in planned, planned
    shown = app.make("config-show").stdout
    assert "pw-" not in shown and re.search(r"^url = postgresql\+psycopg://postgres:\*\*\*@127\.0\.0\.1", shown, re.M), shown
    for release in (app.dir / "releases").iterdir():  # the URL is only on the host
        assert not subprocess.run(["grep", "-rqF", url.split("@")[0], str(release / "config")]).returncode == 0
    # pg_dump and pg_restore get the password in their environment, never on their command
    # line, which every account can read: a db-backup held still on a table lock is looked at.
    password = url.split(":")[2].split("@")[0]
    holder = subprocess.Popen([str(pg_project / ".venv" / "bin" / "python"), "-c", LOCK_NOTES], env={**os.environ, "URL": url},
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        backup = app.popen_make("db-backup", log=pg_project / "db-backup.log")
        try:
            dump = wait_for_process("pg_dump", "--format=custom", "127.0.0.1", seconds=60)
            seen = [line for line in (cmdline(pid) for pid in processes("")) if password in line]
            assert password not in cmdline(dump), cmdline(dump)
            assert seen == [], seen
        finally:
            holder.stdin.close()  # the lock goes: the backup finishes
            assert backup.wait(60) == 0, (pg_project / "db-backup.log").read_text()
    finally:
        holder.kill()
        holder.wait()
    assert "backup: manual-" in (pg_project / "db-backup.log").read_text()


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# Holds the notes table until stdin closes: a pg_dump waits for it, visible in /proc meanwhile.
LOCK_NOTES = """
import os, sys, psycopg
with psycopg.connect(os.environ["URL"]) as connection:
    connection.execute("LOCK TABLE note IN ACCESS EXCLUSIVE MODE")
    print("locked", flush=True)
    sys.stdin.read()
"""
