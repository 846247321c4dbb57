{%- if cookiecutter.database == "postgresql" %}
import itertools
{%- endif %}
import os

import pytest

# config/test.ini for a bare create_app(), as most test suites call a factory, also when
# pytest runs without make test (which sets it too).
os.environ.setdefault("{{ cookiecutter.package_name | upper }}_ENV", "test")

from {{ cookiecutter.package_name }} import create_app
{%- if cookiecutter.database == "postgresql" %}

from pg_server import INSTALL_HINT, PostgresServer, find_bin_dir

DATABASE_NUMBERS = itertools.count(1)
POSTGRESQL_BIN = find_bin_dir()


def require_postgresql() -> None:
    """For a module that needs PostgreSQL: without it, skip the whole module with one line
    that says what to install; in CI (CI=true), fail instead."""
    if POSTGRESQL_BIN is None:
        if os.environ.get("CI"):
            pytest.fail(f"{INSTALL_HINT} (CI must run every test)", pytrace=False)
        pytest.skip(INSTALL_HINT, allow_module_level=True)
{%- endif %}


@pytest.fixture()
def client():
    return create_app("test").test_client()
{%- if cookiecutter.database == "sqlite" %}


@pytest.fixture()
def database_url(tmp_path):
    """A SQLite file of each test's own, in a directory the app has to make."""
    return f"sqlite:///{tmp_path / 'data' / 'test.sqlite3'}"
{%- elif cookiecutter.database == "postgresql" %}


@pytest.fixture(scope="session")
def postgresql_server():
    """A PostgreSQL server of the tests' own (tests/pg_server.py), for the whole run."""
    require_postgresql()
    with PostgresServer(POSTGRESQL_BIN) as server:
        yield server


@pytest.fixture()
def database_url(postgresql_server):
    """An empty database of each test's own on that server."""
    name = f"test_{next(DATABASE_NUMBERS)}"
    postgresql_server.execute(f'CREATE DATABASE "{name}"')
    yield postgresql_server.url(name)
    postgresql_server.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
{%- endif %}
