"""deploy/gunicorn.conf.py, read as gunicorn reads it (a Python file run for its globals)."""
{%- if cookiecutter.database != "none" %}
import os
{%- endif %}
import runpy
from pathlib import Path
{%- if cookiecutter.database != "none" %}
from types import SimpleNamespace

from sqlalchemy import text

from {{ cookiecutter.package_name }}.models import db
{%- endif %}

CONF = str(Path(__file__).resolve().parent.parent / "deploy" / "gunicorn.conf.py")
PREFIX = "{{ cookiecutter.package_name | upper }}"


def settings(monkeypatch, **variables: str) -> dict:
    for name, value in variables.items():
        monkeypatch.setenv(f"{PREFIX}_{name}", value)
    return runpy.run_path(CONF)


def test_workers_are_forks_of_a_master_that_loaded_the_app(monkeypatch):
    conf = settings(monkeypatch, ENV="prod")
    assert conf["preload_app"] is True
    assert conf["workers"] == 2 and conf["wsgi_app"] == "{{ cookiecutter.package_name }}.wsgi:app"


def test_server_preload_false_lets_each_worker_import_the_app(monkeypatch):
    assert settings(monkeypatch, ENV="prod", SERVER_PRELOAD="false")["preload_app"] is False
{%- if cookiecutter.database != "none" %}


def test_a_forked_worker_drops_the_connections_the_master_opened(monkeypatch, database_url):
    """A master that queried while loading the app (an app's own start-up check) leaves a
    pooled connection; a worker must open its own, never share the master's socket."""
    from {{ cookiecutter.package_name }} import create_app

    conf = settings(monkeypatch, ENV="test")
    umask = os.umask(0o022)  # post_fork sets the worker's: this process keeps its own
    app = create_app("test", {"SQLALCHEMY_DATABASE_URI": database_url})
    with app.app_context():
        db.session.execute(text("SELECT 1"))
        db.session.remove()
        (engine,) = db.engines.values()
        assert engine.pool.checkedin() == 1
    server = SimpleNamespace(cfg=SimpleNamespace(preload_app=True), app=SimpleNamespace(wsgi=lambda: app))
    try:
        conf["post_fork"](server, None)
    finally:
        os.umask(umask)
    assert engine.pool.checkedin() == 0
{%- endif %}
