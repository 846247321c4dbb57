"""`make plan` (and `make deploy DRY_RUN=1`) against a real sshd host: what a deploy would
do, and nothing changed on the host, not even the host program's copy. The full disk's
refusal is in test_full_disk.py."""
from __future__ import annotations

import subprocess
import sys

import pytest
from harness.app import new_app, output, stage, tree


@pytest.fixture(scope="module")
def app(baked_project, sshd_host, tmp_path_factory, request):
    return new_app(baked_project, sshd_host, tmp_path_factory, request)


def test_a_plan_before_the_first_deploy_writes_nothing(app):
    planned = app.make("plan")
    out = planned.stdout
    assert "now: none" in out and "dependencies: first deploy: every wheel installed" in out, out
    assert "gunicorn-" in out and "lock: free" in out and out.rstrip().endswith("plan: the deploy would go ahead")
    assert "steps: upload, lock, install, smoke_boot" in out and "switch, handover, prune" in out
    assert not app.dir.exists(), sorted(tree(app.dir.parent))  # not even the host program went up


def test_a_plan_after_a_deploy_names_the_release_and_the_upload_and_changes_nothing(app):
    app.deploy()
    serving = app.current()

    def files():  # less what the running app itself writes (its logs, bytecode)
        return {p: s for p, s in tree(app.dir).items() if "__pycache__" not in p and not p.startswith("shared/log")}
    before = files()
    planned = app.make("deploy", DRY_RUN="1")
    out = planned.stdout
    assert f"now: {serving}" in out and "dependencies: unchanged: linked from the running release" in out, out
    assert "1 wheel(s) the host lacks:" in out and "    my_flask_app-" in out, out
    assert "migrations: none pending (the database is at 0001)" in out, out
    assert files() == before
    assert app.current() == serving and app.healthz()["release"] == serving


MIGRATION = '''"""A migration the host's database has not had."""
revision = "0002"
down_revision = "0001"


def upgrade():
    pass


def downgrade():
    pass
'''


def test_a_pending_migration_is_named_with_its_backup(app):
    added = app.project / "src" / "my_flask_app" / "migrations" / "versions" / "0002_plan_test.py"
    added.write_text(MIGRATION)
    try:
        out = app.make("plan").stdout
    finally:
        added.unlink()
    assert "migrations: 1 pending: 0002; a backup first" in out, out


def test_a_held_lock_refuses_the_plan_and_names_its_holder(app):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "remote.sh"])
    try:
        app.lock.mkdir()
        (app.lock / "info").write_text(f"who=someone@laptop\nwhen=now\nversion=x\npid={holder.pid}\n")
        planned = app.make("plan", check=False)
        assert planned.returncode != 0, planned.stdout + planned.stderr
        assert "lock: held (who=someone@laptop" in planned.stdout
        assert "refused: another deploy holds the lock (who=someone@laptop" in planned.stdout
        assert planned.stdout.rstrip().endswith("plan: the deploy would be refused (above)")
    finally:
        holder.kill()
        holder.wait()
    stale = app.make("plan")  # its holder is gone: a deploy would take it over
    assert "lock: stale (its holder is gone)" in stale.stdout
    (app.lock / "info").unlink()
    app.lock.rmdir()


def test_a_worker_on_a_host_without_systemd_is_refused_by_the_plan(baked_project, sshd_host, tmp_path_factory, request):
    """As the deploy would refuse the release there; the bake's nightly backup (without_systemd
    = skip) is not a refusal."""
    fresh = new_app(baked_project, sshd_host, tmp_path_factory, request)
    assert fresh.make("plan").returncode == 0
    with stage(baked_project, "staging"):
        staging = baked_project / "config/staging.ini"
        staging.write_text(staging.read_text() + "\n[process:mail]\ncommand = sleep 600\n")
        planned = fresh.make("plan", check=False, APP_ENV="staging")
    said = output(planned)
    assert planned.returncode != 0 and "[process:mail] need systemd, and " in said and "does not run it" in said, said
    assert "workers" not in said.split("steps: ")[1].splitlines()[0], said
    assert not fresh.dir.exists()
