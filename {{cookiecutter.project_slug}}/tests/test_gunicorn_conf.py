"""deploy/gunicorn.conf.py, read as gunicorn reads it (a Python file run for its globals),
its hooks called with a stand-in for gunicorn's master (tests/test_handover.py in the
template runs them in real ones)."""
import os
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
{%- if cookiecutter.database != "none" %}
from sqlalchemy import text

from {{ cookiecutter.package_name }}.models import db
{%- endif %}

CONF = str(Path(__file__).resolve().parent.parent / "deploy" / "gunicorn.conf.py")
PREFIX = "{{ cookiecutter.package_name | upper }}"


def settings(monkeypatch, **variables: str) -> dict:
    for name, value in variables.items():
        monkeypatch.setenv(f"{PREFIX}_{name}", value)
    return runpy.run_path(CONF)


class Master:
    """What the hooks use of gunicorn's Arbiter: the app, the error log, halt."""

    def __init__(self, load):
        self.loads, self.logged, self.halted = 0, [], None
        self.app = SimpleNamespace(wsgi=lambda: (setattr(self, "loads", self.loads + 1), load())[1])
        self.log = SimpleNamespace(exception=self.logged.append)

    def halt(self, reason, exit_status):
        self.halted = (reason, exit_status)
        raise SystemExit(exit_status)


@pytest.fixture()
def umask():
    """The hooks set the master's and the workers' umask: this process keeps its own."""
    kept = os.umask(0o022)
    yield
    os.umask(kept)


def test_the_master_loads_the_app_once_before_any_worker_forks(monkeypatch, umask):
    conf = settings(monkeypatch, ENV="prod")
    assert conf["wsgi_app"] == "{{ cookiecutter.package_name }}.wsgi:app" and conf["workers"] == 2
    assert "preload_app" not in conf  # gunicorn's own would load before its error log exists
    master = Master(lambda: "the app")
    conf["when_ready"](master)
    assert master.loads == 1 and master.halted is None


def test_an_app_that_cannot_load_stops_the_master_with_its_traceback_in_the_log(monkeypatch, umask):
    def broken():
        raise RuntimeError("no such table")
    conf = settings(monkeypatch, ENV="prod")
    master = Master(broken)
    with pytest.raises(SystemExit):
        conf["when_ready"](master)
    assert master.logged == ["the app failed to load; stopping"] and master.halted == ("the app failed to load", 3)


def test_server_preload_false_lets_each_worker_load_the_app(monkeypatch, umask):
    master = Master(lambda: "the app")
    settings(monkeypatch, ENV="prod", SERVER_PRELOAD="false")["when_ready"](master)
    assert master.loads == 0
def test_each_worker_says_it_serves_in_the_hand_overs_file_and_only_when_there_is_one(monkeypatch, tmp_path):
    """The host program makes shared/run/handover.ready for a hand-over only (serve.py: PhaseOut)."""
    (tmp_path / "run").mkdir()
    conf = settings(monkeypatch, ENV="test", SHARED_DIR=str(tmp_path))
    ready = tmp_path / "run" / "handover.ready"
    worker = SimpleNamespace(ppid=100, pid=101, cfg=SimpleNamespace(workers=2))
    conf["post_worker_init"](worker)
    assert not ready.exists(), "a worker made the file itself"
    ready.write_text("")
    conf["post_worker_init"](worker)
    conf["post_worker_init"](SimpleNamespace(ppid=100, pid=102, cfg=SimpleNamespace(workers=2)))
    assert ready.read_text() == "100 101 2\n100 102 2\n"


{%- if cookiecutter.database != "none" %}


def test_a_forked_worker_drops_the_connections_the_master_opened(monkeypatch, tmp_path, umask):
    """A master that queried while loading the app (an app's own start-up check) leaves a
    pooled connection; a worker must open its own, never share the master's socket. (A
    SQLite file for any database answer: the rule is SQLAlchemy's, not the server's.)"""
    database_url = f"sqlite:///{tmp_path / 'app.sqlite3'}"
    from {{ cookiecutter.package_name }} import create_app

    conf = settings(monkeypatch, ENV="test")
    app = create_app("test", {"SQLALCHEMY_DATABASE_URI": database_url})
    with app.app_context():
        db.session.execute(text("SELECT 1"))
        db.session.remove()
        (engine,) = db.engines.values()
        assert engine.pool.checkedin() == 1
    conf["post_fork"](Master(lambda: app), None)
    assert engine.pool.checkedin() == 0
{%- endif %}
