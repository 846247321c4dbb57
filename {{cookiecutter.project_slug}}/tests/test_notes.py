"""The database, for real ({{ 'PostgreSQL, on a server the tests start' if cookiecutter.database == 'postgresql' else 'SQLite, a file in a temporary directory' }}): the
migrations make exactly the tables the models describe, and /notes reads and writes them."""
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.config import ENV_PREFIX
from {{ cookiecutter.package_name }}.models import MIGRATIONS, db

{%- if cookiecutter.database == "postgresql" %}

from conftest import require_postgresql

require_postgresql()  # without PostgreSQL: one line saying what to install
{%- endif %}

PROJECT = Path(__file__).resolve().parent.parent


def post_form(client, data: dict):
    """A browser's form post: the CSRF token comes from the home page's form, as a browser gets it."""
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/").get_data(as_text=True))[1]
    return client.post("/notes", data={**data, "csrf_token": token})


@pytest.fixture()
def app(database_url, monkeypatch):
    """The test app on its own database, its tables made by the migrations (as a deploy does)."""
    monkeypatch.setenv(f"{ENV_PREFIX}DATABASE_URL", database_url)
    app = create_app("test")
    with app.app_context():
        upgrade()
    yield app
    with app.app_context():
        db.engine.dispose()


def test_migrations_make_the_tables_the_models_describe(app):
    with app.app_context(), db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
    assert differences == [], "the models and the migrations differ: flask db migrate -m '…' writes one"


def test_migrations_go_down_and_up_again(app):
    with app.app_context():
        downgrade(revision="base")
        assert "note" not in inspect(db.engine).get_table_names()
        upgrade()
        assert "note" in inspect(db.engine).get_table_names()


def test_notes_are_written_and_read_back(app):
    client = app.test_client()
    assert client.get("/notes").get_json() == {"notes": [], "next": None}
    first = post_form(client, {"text": "from a form"})
    second = client.post("/notes", json={"text": "  from JSON  "})
    assert (first.status_code, second.status_code) == (201, 201)
    notes = client.get("/notes").get_json()["notes"]
    assert [(n["id"], n["text"]) for n in notes] == [
        (first.get_json()["id"], "from a form"),
        (second.get_json()["id"], "from JSON"),
    ]
    assert notes[0]["created_at"].endswith("+00:00")


@pytest.mark.parametrize("body", [{"data": {}}, {"data": {"text": "  "}}, {"json": {"text": 3}},
                                  {"json": ["text"]}, {"json": {"text": "x" * 1001}}],
                         ids=["missing", "blank", "not-text", "not-an-object", "too-long"])
def test_a_bad_note_is_refused_and_nothing_is_written(app, body):
    client = app.test_client()
    response = post_form(client, body["data"]) if "data" in body else client.post("/notes", **body)
    assert response.status_code == 400
    assert "text" in response.get_json()["error"]
    assert client.get("/notes").get_json() == {"notes": [], "next": None}


@pytest.mark.parametrize("post", [
    {"data": {"text": "no token"}},
    {"data": {"text": "a forged token", "csrf_token": "IjEyMyI.forged"}},
    {"data": '{"text": "JSON as text/plain, as a cross-site form can send"}', "content_type": "text/plain"},
], ids=["no-token", "forged-token", "json-as-text-plain"])
def test_a_post_without_the_forms_csrf_token_is_refused(app, post):
    """What another site can make a visitor's browser send, without a CORS preflight."""
    client = app.test_client()
    client.get("/")  # the visitor has a session, as a logged-in one would
    response = client.post("/notes", **post)
    assert response.status_code == 400
    assert "CSRF token is missing or wrong" in response.get_json()["error"]
    assert client.get("/notes").get_json()["notes"] == []


def test_a_token_from_another_session_is_refused(app):
    token = re.search(r'value="([^"]+)"', app.test_client().get("/").get_data(as_text=True))[1]
    victim = app.test_client()
    victim.get("/")
    assert victim.post("/notes", data={"text": "x", "csrf_token": token}).status_code == 400


class CountedBody(io.RawIOBase):
    """SIZE bytes of JSON-ish filler, counting what the app reads of it."""

    def __init__(self, size: int) -> None:
        self.size, self.read_so_far = size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.read_so_far)
        buffer[:n] = b" " * n
        self.read_so_far += n
        return n


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "chunked"])
def test_a_50_mib_body_gets_413_unread_and_writes_nothing(app, announced):
    client, body = app.test_client(), CountedBody(50 * 1024 * 1024)
    # what gunicorn hands the app: the socket's stream, its length announced or chunked
    stream = {"CONTENT_LENGTH": str(body.size)} if announced else {
        "HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True}
    response = client.post("/notes", content_type="application/json",
                           environ_overrides={"wsgi.input": body, **stream})
    # Chunked, the app reads one byte past the limit (views.bounded_chunked_body), no further.
    assert response.status_code == 413
    assert body.read_so_far == (0 if announced else app.config["MAX_CONTENT_LENGTH"] + 1), body.read_so_far
    assert client.get("/notes").get_json()["notes"] == []


def test_notes_come_in_pages_with_a_link_to_the_next(app):
    client = app.test_client()
    ids = [client.post("/notes", json={"text": f"note {n}"}).get_json()["id"] for n in range(5)]
    seen, url = [], "/notes?limit=2"
    while url:
        page = client.get(url).get_json()
        assert len(page["notes"]) <= 2
        seen += [note["id"] for note in page["notes"]]
        url = page["next"]
    assert seen == ids
    assert len(client.get("/notes").get_json()["notes"]) == 5  # the default page holds them all


@pytest.mark.parametrize("query", ["limit=0", "limit=100000", "limit=x", "after=-1", "after=x"])
def test_a_bad_page_request_says_what_is_wrong(app, query):
    response = app.test_client().get(f"/notes?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.get_json()["error"]


def test_the_home_page_form_posts_to_notes_with_its_token(app):
    page = app.test_client().get("/").get_data(as_text=True)
    assert re.search(r'<form method="post" action="/notes">', page)
    assert re.search(r'name="csrf_token" type="hidden" value="[^"]+"', page)


def test_notes_outlive_the_app(app):
    post_form(app.test_client(), {"text": "kept"})
    with app.app_context():
        db.engine.dispose()
    again = create_app("test")  # what a new release's workers do
    assert [n["text"] for n in again.test_client().get("/notes").get_json()["notes"]] == ["kept"]


def test_healthz_does_not_need_the_database(monkeypatch, tmp_path):
    """The deploy's smoke boot checks /healthz before the release command migrates."""
{%- if cookiecutter.database == "postgresql" %}
    monkeypatch.setenv(f"{ENV_PREFIX}DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nothing")
{%- else %}
    monkeypatch.setenv(f"{ENV_PREFIX}DATABASE_URL", f"sqlite:///{tmp_path / 'never-migrated.sqlite3'}")
{%- endif %}
    assert create_app("test").test_client().get("/healthz").status_code == 200


def test_migrations_are_in_the_package():
    """So the wheel, and every release, carries them."""
    assert Path(MIGRATIONS).parent == Path(create_app.__code__.co_filename).parent
    assert min(p.name for p in Path(MIGRATIONS, "versions").glob("*.py")) == "0001_initial.py"


def test_migrate_is_the_release_command_and_backs_up_only_before_a_migration(database_url, tmp_path):
    """What a deploy runs on the host, from another directory (the release's): the pending
    migrations after a backup; with none pending, nothing at all, not even a backup."""
    env = {**os.environ, f"{ENV_PREFIX}ENV": "test", f"{ENV_PREFIX}DATABASE_URL": database_url,
           f"{ENV_PREFIX}CONFIG_DIR": str(PROJECT / "config")}
    command = [str(Path(sys.executable).with_name("{{ cookiecutter.package_name }}")), "migrate", "--backup"]
    first = subprocess.run([*command, str(tmp_path / "first.backup")], cwd=tmp_path, env=env, capture_output=True, text=True,
                           check=False)
    assert first.returncode == 0, first.stderr
    assert "Running upgrade  -> 0001" in first.stderr
    again = subprocess.run([*command, str(tmp_path / "again.backup")], cwd=tmp_path, env=env, capture_output=True, text=True,
                           check=False)
    assert again.returncode == 0, again.stderr
    assert "nothing to migrate, no backup taken" in again.stdout and "Running upgrade" not in again.stderr
    assert not (tmp_path / "again.backup").exists()
{%- if cookiecutter.database == "sqlite" %}


def test_sqlite_at_head_agrees_with_alembic(app, database_url):
    """migrate's quick answer for SQLite (no app, no Alembic) is Alembic's own."""
    from {{ cookiecutter.package_name }}.backup import sqlite_at_head

    assert sqlite_at_head(database_url)
    with app.app_context():
        downgrade(revision="base")
    assert not sqlite_at_head(database_url)
    assert not sqlite_at_head(database_url.replace("test.sqlite3", "missing.sqlite3"))
{%- endif %}
