"""The pre_gen_project hook refuses bad answers, says why, and leaves nothing behind."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
from cookiecutter.exceptions import FailedHookException, OutputDirExistsException

GOOD = {
    "project_slug": "my-app",  # package_name is derived: my_app
    "port": "8080",
    "version": "1.0.0rc1",
    "author_email": "a.b@example.org",
    "python_version": "3.12",
}

# field, refused value
BAD = [
    ("project_slug", "My App"),
    ("project_slug", "1app"),
    ("project_slug", "_app"),
    ("project_slug", "app.x"),
    ("project_slug", "café"),
    ("project_slug", "it's"),
    ("project_slug", "a/b"),
    ("project_slug", "a/b/c"),
    ("project_slug", "a/../b"),
    ("project_slug", "a\\b"),
    ("project_slug", "../x"),
    ("package_name", "my-app"),
    ("package_name", "1app"),
    ("package_name", "café"),
    ("package_name", "class"),
    ("package_name", "flask"),
    ("package_name", "Flask"),
    ("package_name", "gunicorn"),
    ("package_name", "pytest"),
    ("package_name", "test"),
    ("package_name", "json"),
    ("package_name", "logging"),
    ("port", "80a"),
    ("port", "0"),
    ("port", "70000"),
    ("port", "65536"),
    ("port", "-1"),
    ("port", ""),
    ("author_email", ""),
    ("author_email", "ab.example.org"),
    ("author_email", "a@b@example.org"),
    ("author_email", "@example.org"),
    ("author_email", "a@example"),
    ("author_email", "a@example."),
    ("author_email", "a b@example.org"),
    ("version", ""),
    ("version", "one"),
    ("version", "1.0.0-final"),
    ("version", "1..0"),
    ("version", " 1.0"),
    ("python_version", "3.9"),
    ("python_version", "3"),
    ("python_version", "2.7"),
    ("python_version", "4.0"),
    ("python_version", "3.10.1"),
    ("python_version", "py3.12"),
]

# package_name left to be derived from a slug that is fine as a directory name
DERIVED = [("class", "is a Python keyword"), ("test", "shadow"), ("flask", "shadow")]

ACCEPTED = [
    {},
    {"package_name": "my_app"},
    {"package_name": "match"},  # soft keywords are importable
    {"project_slug": "app2_x-y"},
    {"port": "1"},
    {"port": "65535"},
    {"version": "2!1.0.post1.dev3+local.7"},
    {"python_version": "3.10"},
]


@pytest.fixture(autouse=True)
def _rendered_hooks_in_pytest_tmp(monkeypatch, tmp_path_factory):
    # cookiecutter writes each rendered hook to NamedTemporaryFile(delete=False), never removed.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.getbasetemp()))


def leftovers(tmp_path: Path, wait: float = 3.0) -> list[str]:
    """What is left under the test's tmp dir besides the empty dir pytest-cookies
    baked into (tmp_path/cookies/bake00); polls because the hook removes the parents
    of a slug like 'a/b' from a detached process once cookiecutter has run."""
    expected = {tmp_path / "cookies", tmp_path / "cookies" / "bake00"}
    deadline = time.monotonic() + wait
    while True:
        left = sorted(
            str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p not in expected
        )
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.mark.parametrize(("field", "value"), BAD)
def test_bad_answer_is_refused(cookies, capfd, tmp_path, field, value):
    result = cookies.bake(extra_context={**GOOD, field: value})

    assert result.exit_code != 0
    assert isinstance(result.exception, FailedHookException)
    assert f"{field} {value!r}" in capfd.readouterr().err
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("slug", "problem"), DERIVED)
def test_derived_package_name_names_both_fields(cookies, capfd, tmp_path, slug, problem):
    result = cookies.bake(extra_context={**GOOD, "project_slug": slug})

    assert result.exit_code != 0
    err = capfd.readouterr().err
    assert f"package_name {slug!r} (derived from project_slug {slug!r})" in err
    assert problem in err
    assert leftovers(tmp_path) == []


def test_every_problem_is_reported_at_once_one_line_each(cookies, capfd, tmp_path):
    bad = {
        "project_slug": "Bad Slug",
        "package_name": "class",
        "port": "0",
        "author_email": "nobody",
        "version": "one",
        "python_version": "3.9",
    }
    result = cookies.bake(extra_context=bad)

    assert result.exit_code != 0
    lines = capfd.readouterr().err.splitlines()
    for field, value in bad.items():
        assert sum(line.startswith(f"{field} {value!r}") for line in lines) == 1, field
    assert "Traceback" not in "\n".join(lines)
    assert leftovers(tmp_path) == []


def test_empty_slug_is_refused_by_cookiecutter_before_the_hook(cookies, tmp_path):
    # <output_dir>/'' is the output dir itself, which exists: OutputDirExistsException.
    result = cookies.bake(extra_context={**GOOD, "project_slug": ""})

    assert isinstance(result.exception, OutputDirExistsException)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("answers", ACCEPTED, ids=repr)
def test_good_answers_pass_the_hook(cookies, answers):
    result = cookies.bake(extra_context={**GOOD, **answers})

    assert not isinstance(result.exception, FailedHookException)
    assert result.exit_code == 0, result.exception
