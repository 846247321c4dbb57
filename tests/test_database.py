"""The `database` answer: sqlite (the default), postgresql or none.

A database project gets Flask-SQLAlchemy and Flask-Migrate pinned, the Note model, its
first migration inside the package, /notes, tests against a real database, [database] url
and `flask db upgrade` as the release command; a none project gets none of it. The fast
tests read the bakes; the slow ones run each variant's `make test` (the postgresql one
against a server its tests start), build the wheel, and migrate from an unpacked release
as a deploy's release command would.
"""
from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from conftest import TEMPLATE, bake, make
from harness.release import install_as_the_host
from harness.venvs import make_venv

VARIANTS = ("none", "sqlite", "postgresql")
PACKAGE = "my_flask_app"
SRC = Path("src", PACKAGE)
DATABASE_FILES = [SRC / "models.py", SRC / "notes.py", SRC / "migrations" / "env.py",
                  SRC / "migrations" / "alembic.ini", SRC / "migrations" / "script.py.mako",
                  SRC / "migrations" / "versions" / "0001_initial.py", Path("tests", "test_notes.py"),
                  Path("tests", "test_backup.py"), Path("docs", "database.md")]
DATABASE_PINS = {"flask_sqlalchemy", "flask_migrate", "sqlalchemy", "alembic", "mako", "greenlet",
                 "typing_extensions", "tomli"}
PG_PINS = {"psycopg", "psycopg_binary"}
TIMES: dict[str, float] = {}


def pins(project: Path) -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in (project / "requirements.txt").read_text().splitlines())
    return {re.sub(r"[-_.]+", "_", n).lower(): v for n, v in (line.split("==") for line in lines if line)}


def ini(project: Path, name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read(project / "config" / name)
    return parser


@pytest.fixture(scope="module")
def bakes(tmp_path_factory) -> dict[str, Path]:
    projects = {}
    for variant in VARIANTS:
        started = time.monotonic()
        projects[variant] = bake(tmp_path_factory.mktemp(variant), database=variant)
        TIMES[f"bake {variant}"] = time.monotonic() - started
    return projects


def test_default_is_sqlite(tmp_path):
    project = bake(tmp_path)
    assert (project / SRC / "models.py").is_file()
    assert "sqlite" in ini(project, "prod.ini").get("database", "url")


def test_none_has_no_database_code(bakes):
    project = bakes["none"]
    assert not [p for p in DATABASE_FILES + [SRC / "migrations", SRC / "backup.py", Path("tests/pg_server.py")]
                if (project / p).exists()]
    assert not DATABASE_PINS & set(pins(project)) and not PG_PINS & set(pins(project))
    code = [*(project / "src").rglob("*.py"), *(project / "tests").rglob("*.py"), project / "setup.py",
            *(project / "config").glob("*.ini"), *project.glob("requirements*.txt")]
    for path in code:
        text = path.read_text(encoding="utf-8").lower()
        assert "sqlalchemy" not in text and "migrat" not in text and "[database]" not in text, path
    for name in ("base.ini", "dev.ini", "test.ini", "prod.ini"):
        assert not ini(project, name).has_section("database"), name
    assert ini(project, "base.ini").get("deploy", "release_command") == ""


@pytest.mark.parametrize("variant", ["sqlite", "postgresql"])
def test_database_project_has_model_migration_and_pins(bakes, variant):
    project = bakes[variant]
    assert not [p for p in DATABASE_FILES if not (project / p).is_file()]
    assert (project / "tests" / "pg_server.py").exists() == (variant == "postgresql")
    pinned = pins(project)
    assert DATABASE_PINS <= set(pinned)
    assert (PG_PINS <= set(pinned)) == (variant == "postgresql") and (PG_PINS & set(pinned) == set()) == (
        variant == "sqlite")
    assert pinned["sqlalchemy"].startswith("2.0.")  # 2.1 needs Python 3.11; the minimum is 3.10
    base = ini(project, "base.ini")
    assert base.get("deploy", "release_command") == f"{PACKAGE} migrate"
    assert base.get("database", "url") == "sqlite:///%(here)s/../instance/dev.sqlite3"
    assert "instance/" in (project / ".gitignore").read_text().splitlines()


def test_sqlite_prod_database_lives_in_shared_data(bakes):
    assert ini(bakes["sqlite"], "prod.ini").get("database", "url") == f"sqlite:///%(shared)s/data/{PACKAGE}.sqlite3"


def test_postgresql_prod_url_is_set_only_on_the_host(bakes):
    project = bakes["postgresql"]
    assert ini(project, "prod.ini").get("database", "url") == ""
    assert "make config-set SETTING=database.url" in (project / "config" / "prod.ini").read_text()


@pytest.mark.parametrize("variant", ["sqlite", "postgresql"])
def test_alembic_files_are_copied_unrendered(bakes, variant):
    source = TEMPLATE / "{{cookiecutter.project_slug}}" / "src" / "{{cookiecutter.package_name}}" / "migrations"
    for path in source.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            baked = bakes[variant] / SRC / "migrations" / path.relative_to(source)
            assert baked.read_bytes() == path.read_bytes(), baked
    assert "${upgrades if upgrades else \"pass\"}" in (bakes[variant] / SRC / "migrations" / "script.py.mako").read_text()


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_cookiecutter_leftovers(bakes, variant):
    project = bakes[variant]
    found = [str(p.relative_to(project)) for p in project.rglob("*")
             if p.is_file() and "templates" not in p.parts and "__pycache__" not in p.parts
             and any(mark in re.sub(r"\$\{\{.*?\}\}", "", p.read_text(encoding="utf-8"))  # less GitHub's ${{ }}
                     for mark in ("{{", "{%", "{#"))]
    assert found == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_python_file_compiles(bakes, variant):
    for path in bakes[variant].rglob("*.py"):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


# --- slow: each variant's own tests, the wheel, a migration from a release -----------------


@pytest.fixture(scope="module")
def tested(bakes, tmp_path_factory) -> dict[str, Path]:
    """Each variant after `make test` (its venv made, so `make build` can follow)."""
    for variant, project in bakes.items():
        subprocess.run(["git", "init", "-q"], cwd=project, check=True)
        started = time.monotonic()
        make_venv(project, tmp_path_factory)
        TIMES[f"make venv {variant} (or its copy)"] = time.monotonic() - started
        started = time.monotonic()
        result = make(project, "test", check=False, timeout=900)
        TIMES[f"make test {variant}"] = time.monotonic() - started
        assert result.returncode == 0, f"{variant}: make test failed:\n{result.stdout}\n{result.stderr}"
        project.joinpath(".make-test.log").write_text(result.stdout)
    yield bakes
    print("\n" + "\n".join(f"  {what}: {seconds:.2f}s" for what, seconds in TIMES.items()))


@pytest.mark.parametrize("variant", VARIANTS)
def test_make_test_passes_with_a_real_database(tested, variant):
    out = (tested[variant] / ".make-test.log").read_text()
    assert re.search(r"\d+ passed", out) and "skipped" not in out and "failed" not in out, out
    notes = subprocess.run([".venv/bin/python", "-m", "pytest", "-q", "-rs", "tests/test_notes.py"],
                           cwd=tested[variant], capture_output=True, text=True)
    if variant == "none":
        assert "file or directory not found" in notes.stdout + notes.stderr
    else:
        assert notes.returncode == 0 and "skipped" not in notes.stdout, notes.stdout


def test_postgresql_tests_without_postgresql_say_what_to_install(tested):
    """PG_BIN names the only place to look: here, one with no PostgreSQL in it."""
    env = {**os.environ, "PG_BIN": str(tested["postgresql"] / "nothing-here")}
    env.pop("CI", None)
    command = [".venv/bin/python", "-m", "pytest", "-p", "no:cacheprovider"]
    result = subprocess.run(command, cwd=tested["postgresql"], env=env, capture_output=True, text=True)
    out = result.stdout + result.stderr
    assert result.returncode == 0 and re.search(r"\d+ passed, \d+ skipped", out), out  # each PostgreSQL module
    assert out.count("PostgreSQL not found: apt-get install postgresql") == 1, out
    assert "Traceback" not in out
    result = subprocess.run(command, cwd=tested["postgresql"], env={**env, "CI": "true"},
                            capture_output=True, text=True)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "PostgreSQL not found: apt-get install postgresql" in out, out
    assert "Traceback" not in out


@pytest.mark.parametrize("variant", ["sqlite", "postgresql"])
def test_wheel_carries_the_migrations(tested, variant):
    make(tested[variant], "build")
    (wheel,) = (tested[variant] / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for path in ("env.py", "alembic.ini", "script.py.mako", "versions/0001_initial.py"):
        assert f"{PACKAGE}/migrations/{path}" in names


def test_release_command_migrates_from_an_unpacked_release(tested, tmp_path):
    """`make pack`, unpack, install offline as the host does (installer, no pip), then the release command run as
    remote.sh runs it: in the release directory, its venv first on PATH, the prod config and a
    shared/ outside the release. The SQLite file appears in shared/data/, with the table."""
    project = tested["sqlite"]
    make(project, "pack")
    (line,) = (project / "build" / "packed.txt").read_text().splitlines()
    with tarfile.open(project / line.split()[1]) as tar:
        tar.extractall(tmp_path, filter="data")
    (release,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    install_as_the_host(release)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "local.ini").write_text("[app]\nsecret_key = a-real-one-3f1c9a0e7b\n")
    prefix = PACKAGE.upper()
    env = {"PATH": f"{release}/venv/bin:/usr/bin:/bin", f"{prefix}_ENV": "prod",
           f"{prefix}_SHARED_DIR": str(shared), f"{prefix}_LOCAL_CONFIG": str(shared / "local.ini")}
    command = subprocess.run([release / "venv/bin/python", "-m", f"{PACKAGE}.config", "get", "prod", "deploy",
                              "release_command"], cwd=release, env=env, capture_output=True, text=True, check=True)
    for _ in range(2):  # and again: nothing to do the second time
        result = subprocess.run(["sh", "-c", command.stdout.strip()], cwd=release, env=env,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    database = shared / "data" / f"{PACKAGE}.sqlite3"
    tables = subprocess.run([sys.executable, "-c", f"import sqlite3; print(sorted(r[0] for r in sqlite3.connect("
                             f"{str(database)!r}).execute(\"select name from sqlite_master where type='table'\")))"],
                            capture_output=True, text=True, check=True).stdout
    assert tables.strip() == "['alembic_version', 'note']"
    assert not list(release.rglob("*.sqlite3"))
