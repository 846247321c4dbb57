"""Free-text answers holding quotes, backslashes, `$`, `#`, `%` and non-ASCII text bake a
project whose Python, INI and Makefile all work and give the answers back as typed.

One bake with one venv (`make venv`, ~10 s): the project's own checks run on it.
"""
from __future__ import annotations

import ast
import configparser
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import bake, make

# Answers are rendered by Jinja before the hook sees them (so no "{{" or "{%" here),
# and a line break is refused by the hook (test_hooks.py).
NASTY = {
    "project_name": "Zoë — 日本語 \\n \"'\"\"\" ''' $(shell touch pwned) $$HOME # 100% ${x} \\",
    "project_slug": "nasty",
    "description": "Ends with a backslash \\",
    "author_name": "O'Brien \"\"\" ''' \\\\ \\N{x} $(USER) # %(here)s %% ",
    "author_email": "o\"brien\\x@example.org",  # passes the hook: one @, no space
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    project = bake(tmp_path_factory.mktemp("answers"), **NASTY)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    return project


def py_files(project: Path) -> list[Path]:
    return [p for p in project.rglob("*.py") if ".venv" not in p.parts]


def test_every_python_file_compiles(project):
    assert py_files(project)
    for path in py_files(project):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_python_gives_back_each_answer_as_typed(project):
    init = project / "src" / "nasty" / "__init__.py"
    module = ast.parse(init.read_text(encoding="utf-8"))
    assert ast.get_docstring(module) == f"{NASTY['project_name']}: the Flask application factory."
    setup = ast.parse((project / "setup.py").read_text(encoding="utf-8"))
    assert ast.get_docstring(setup).startswith(f"Package metadata for {NASTY['project_name']}: ")


def test_setup_py_metadata_is_the_answers(project):
    out = subprocess.run(
        [sys.executable, "setup.py", "--description", "--author", "--author-email"],
        cwd=project, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert out[-3:] == [NASTY["description"], NASTY["author_name"], NASTY["author_email"]]


def test_every_ini_parses(project):
    for path in (project / "config").glob("*.ini"):
        # the defaults config.py gives every file: %(here)s and %(shared)s
        parser = configparser.ConfigParser(defaults={"here": "/h", "shared": "/s"})
        parser.read(path, encoding="utf-8")
        for section in parser.sections():
            dict(parser[section])  # interpolates every value: a stray % would raise here


def test_makefile_comment_stays_a_comment(project):
    result = make(project, "help")
    assert "help" in result.stdout
    first = (project / "Makefile").read_text(encoding="utf-8").splitlines()[0]
    assert first == f"# {NASTY['project_name']}: `make help` lists every target. Host-side logic lives in"
    assert not (project / "pwned").exists()


def test_project_checks_and_tests_pass(project):
    """check-config for every environment, then the project's pytest, whose test_app.py
    looks for the project name in the page as Flask's autoescape writes it."""
    make(project, "venv", timeout=300)
    make(project, "check-config")
    make(project, "test")
    assert not (project / "pwned").exists()
