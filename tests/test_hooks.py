"""Bad answers are refused with one sentence naming the field, and nothing is left behind.

Most are refused by hooks/pre_gen_project.py; an empty or path-like project_slug is
refused earlier, while cookiecutter reads the answers (the `checked_slug` filter in
flask_deploy_answers.py), because cookiecutter creates the project directory before
the hook runs.  Either way cookiecutter() raises FailedHookException.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import TEMPLATE
from cookiecutter.exceptions import FailedHookException
from cookiecutter.generate import generate_context, generate_files

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
    ("project_slug", "/abs/x"),
    ("project_slug", ""),
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
    # free text may hold anything but a line break or another control character
    ("project_name", "two\nlines"),
    ("project_name", "line\u2028separator"),
    ("description", "vertical\x0btab"),  # not "\r": Jinja renders answers, making it "\n"
    ("description", "tab\there"),
    ("author_name", "nul\x00"),
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


def leftovers(tmp_path: Path) -> list[str]:
    """What is left under the test's tmp dir besides the empty dir pytest-cookies
    bakes into (tmp_path/cookies/bake00), if it got that far."""
    expected = {tmp_path / "cookies", tmp_path / "cookies" / "bake00"}
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p not in expected)


def refusal(result, capfd) -> str:
    """The sentences: the hook prints them on stderr, checked_slug raises them."""
    return capfd.readouterr().err + str(result.exception)


@pytest.mark.parametrize(("field", "value"), BAD)
def test_bad_answer_is_refused(cookies, capfd, tmp_path, field, value):
    result = cookies.bake(extra_context={**GOOD, field: value})

    assert result.exit_code != 0
    assert isinstance(result.exception, FailedHookException)
    assert f"{field} {value!r}" in refusal(result, capfd)
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


@pytest.mark.parametrize("answers", [{"project_slug": ""}, {"project_name": "!!!"}], ids=repr)
def test_empty_slug_names_the_field(cookies, tmp_path, answers):
    # Without checked_slug, <output_dir>/'' is the output dir itself, which exists, and
    # cookiecutter stopped with '"<dir>" directory already exists' before the hook ran.
    result = cookies.bake(extra_context=answers)

    assert isinstance(result.exception, FailedHookException)
    message = str(result.exception)
    assert message.startswith("project_slug '' is empty") and "\n" not in message
    if "project_name" in answers:
        assert "project_name '!!!'" in message
    assert leftovers(tmp_path) == []


CLI_REFUSALS = [
    (["project_slug="], "project_slug ''"),
    (["project_name=!!!"], "project_slug ''"),
    (["project_slug="], "project_slug ''", "--overwrite-if-exists"),
    (["project_slug=a/b"], "project_slug 'a/b'"),
    # Refused by the hook: the project dir existed for a moment.  cookiecutter's CLI also
    # logs "Stopping generation because pre_gen_project hook script didn't exit
    # successfully" with a traceback of its own for any failing hook.
    (["port=0"], "port '0'"),
]


@pytest.mark.parametrize("case", CLI_REFUSALS, ids=lambda case: " ".join(case[0] + list(case[2:])))
def test_cli_refusal_is_one_sentence_and_leaves_the_output_dir_as_it_was(tmp_path, case):
    answers, expected, *options = case
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)  # an empty dir of the user's: a slug 'a/b' must not remove it
    (out / "keep.txt").write_text("mine")
    cli = Path(sys.executable).with_name("cookiecutter")
    result = subprocess.run(
        [cli, "--no-input", *options, "--output-dir", out, TEMPLATE, *answers],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},  # replay files go under this HOME
    )

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert expected in output
    if not expected.startswith("port"):
        assert "Traceback" not in output
    assert len([line for line in output.splitlines() if line.startswith(expected)]) == 1
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["a", "keep.txt"]


def test_hook_alone_refuses_an_empty_slug_and_keeps_the_output_dir(tmp_path, capfd):
    """The hook's own check, for a bake that skips checked_slug: a hand-edited replay
    file, rendered with overwrite so that the project dir *is* the output dir."""
    (tmp_path / "keep.txt").write_text("mine")
    context = generate_context(
        context_file=str(TEMPLATE / "cookiecutter.json"),
        extra_context={**GOOD, "project_slug": "", "package_name": "my_app"},
    )
    cookiecutter = {key: value for key, value in context["cookiecutter"].items() if key != "__prompts__"}
    cookiecutter["__project_slug_checked"] = ""  # as cookiecutter would have stored it
    with pytest.raises(FailedHookException):
        generate_files(TEMPLATE, {"cookiecutter": cookiecutter}, output_dir=tmp_path,
                       overwrite_if_exists=True)

    assert "project_slug '' is not valid" in capfd.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("answers", ACCEPTED, ids=repr)
def test_good_answers_pass_the_hook(cookies, answers):
    result = cookies.bake(extra_context={**GOOD, **answers})

    assert not isinstance(result.exception, FailedHookException)
    assert result.exit_code == 0, result.exception


def test_a_database_outside_the_choices_is_refused_before_any_file(tmp_path):
    """cookiecutter itself checks a choice variable given on the command line, before any
    directory exists; its message names the field and the choices (after a traceback of its
    own, which we cannot shorten: no hook or filter has run yet)."""
    cli = Path(sys.executable).with_name("cookiecutter")
    result = subprocess.run([cli, "--no-input", "--output-dir", tmp_path / "out", TEMPLATE, "database=mysql"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert "mysql provided for choice variable database, but the choices are ['sqlite', 'postgresql', 'none']" in (
        result.stderr.splitlines()[-1])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("database", ["mysql", ""])
def test_hook_alone_refuses_a_database_outside_the_choices(tmp_path, capfd, database):
    """For a bake that skips cookiecutter's check: a hand-edited replay file."""
    context = generate_context(context_file=str(TEMPLATE / "cookiecutter.json"), extra_context=GOOD)
    cookiecutter = {key: value for key, value in context["cookiecutter"].items() if key != "__prompts__"}
    cookiecutter.update(database=database, project_slug="my-app", package_name="my_app",
                        __project_slug_checked="my-app")
    with pytest.raises(FailedHookException):
        generate_files(TEMPLATE, {"cookiecutter": cookiecutter}, output_dir=tmp_path)

    assert f"database {database!r} is not valid: use sqlite, postgresql or none." in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []
