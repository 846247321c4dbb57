"""Bad answers are refused with one sentence naming the field, and nothing is left behind.

Most are refused by hooks/pre_gen_project.py; an empty or path-like project_slug is
refused earlier, while cookiecutter reads the answers (the `checked_slug` filter in
flask_deploy_answers.py), because cookiecutter creates the project directory before
the hook runs.  Either way cookiecutter() raises FailedHookException.

Every case is checked by calling the checks themselves: the answers rendered by
cookiecutter's own code (defaults derived, checked_slug applied), then the hook's checks,
imported from the hook file (only its last line is Jinja).  A few real bakes prove the
hook and the filter are wired in: a refusal raises FailedHookException and leaves nothing
behind, the CLI prints one sentence, a good bake passes.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import TEMPLATE
from cookiecutter.environment import StrictEnvironment
from cookiecutter.exceptions import FailedHookException
from cookiecutter.generate import generate_context, generate_files
from cookiecutter.prompt import prompt_for_config

HOOK_FILE = TEMPLATE / "hooks" / "pre_gen_project.py"


def load_hook():
    spec = importlib.util.spec_from_file_location("pre_gen_project", HOOK_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hook = load_hook()

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


def rendered(**given: str) -> dict[str, object]:
    """The `cookiecutter` context a `--no-input` bake with these answers hands the hook:
    cookiecutter's own code derives the defaults (project_slug, package_name) and applies
    checked_slug, which raises FailedHookException; no directory is made, no hook run."""
    context = generate_context(context_file=str(TEMPLATE / "cookiecutter.json"), extra_context=given)
    return dict(prompt_for_config(context, no_input=True))


def refusal(**given: str) -> str:
    """The sentences a bake with these answers is refused with ('' if none): checked_slug
    raises them, the hook prints them on stderr, one a line."""
    try:
        context = rendered(**given)
    except FailedHookException as refused:
        return str(refused)
    return "\n".join(hook.check_answers(hook.answers_from(context)))


# --- the checks, called directly ------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), BAD)
def test_bad_answer_is_refused(field, value):
    assert f"{field} {value!r}" in refusal(**{**GOOD, field: value})


@pytest.mark.parametrize(("slug", "problem"), DERIVED)
def test_derived_package_name_names_both_fields(slug, problem):
    message = refusal(**{**GOOD, "project_slug": slug})

    assert f"package_name {slug!r} (derived from project_slug {slug!r})" in message
    assert problem in message


def test_every_problem_is_reported_at_once_one_line_each(capsys):
    bad = {
        "project_slug": "Bad Slug",
        "package_name": "class",
        "port": "0",
        "author_email": "nobody",
        "version": "one",
        "python_version": "3.9",
    }
    assert hook.main(json.dumps(rendered(**bad))) == 1

    lines = capsys.readouterr().err.splitlines()
    for field, value in bad.items():
        assert sum(line.startswith(f"{field} {value!r}") for line in lines) == 1, field
    assert "Traceback" not in "\n".join(lines)


@pytest.mark.parametrize("answers", [{"project_slug": ""}, {"project_name": "!!!"}], ids=repr)
def test_empty_slug_names_the_field(answers):
    # Without checked_slug, <output_dir>/'' is the output dir itself, which exists, and
    # cookiecutter stopped with '"<dir>" directory already exists' before the hook ran.
    with pytest.raises(FailedHookException) as refused:
        rendered(**answers)

    message = str(refused.value)
    assert message.startswith("project_slug '' is empty") and "\n" not in message
    if "project_name" in answers:
        assert "project_name '!!!'" in message


# What the CLI prints for these (test_cli_refusal_… runs it for real on one of each kind).
CLI_REFUSALS = [
    ({"project_slug": ""}, "project_slug ''"),
    ({"project_name": "!!!"}, "project_slug ''"),
    ({"project_slug": "a/b"}, "project_slug 'a/b'"),
    ({"port": "0"}, "port '0'"),  # refused by the hook
]


@pytest.mark.parametrize(("answers", "expected"), CLI_REFUSALS, ids=repr)
def test_a_refusal_is_one_sentence_naming_the_field(answers, expected):
    message = refusal(**answers)

    assert expected in message
    assert len([line for line in message.splitlines() if line.startswith(expected)]) == 1
    assert "Traceback" not in message


def test_the_hook_alone_refuses_an_empty_slug():
    """The hook's own check, for a bake that skips checked_slug: a hand-edited replay file
    (test_hook_alone_… below bakes one for real)."""
    context = {**rendered(**GOOD), "project_slug": "", "package_name": "my_app"}

    assert "project_slug '' is not valid" in "\n".join(hook.check_answers(hook.answers_from(context)))


@pytest.mark.parametrize("answers", ACCEPTED, ids=repr)
def test_good_answers_pass_the_checks(answers):
    assert refusal(**{**GOOD, **answers}) == ""


def test_a_database_outside_the_choices_is_refused_before_any_file():
    """cookiecutter itself checks a choice variable given on the command line, while it
    reads the answers (generate_context), before any directory exists; its message names
    the field and the choices (the CLI prints it after a traceback of its own, which we
    cannot shorten: no hook or filter has run yet)."""
    with pytest.raises(ValueError) as refused:
        rendered(database="mysql")

    assert "mysql provided for choice variable database, but the choices are ['sqlite', 'postgresql', 'none']" in (
        str(refused.value))


@pytest.mark.parametrize("database", ["mysql", ""])
def test_hook_alone_refuses_a_database_outside_the_choices(database):
    """For a bake that skips cookiecutter's check: a hand-edited replay file."""
    context = {**rendered(**GOOD), "database": database}

    assert f"database {database!r} is not valid: use sqlite, postgresql or none." in hook.check_answers(
        hook.answers_from(context))


def test_the_rendered_hook_reads_every_answer_back_as_typed():
    """The hook's one Jinja line renders the answers as JSON in a raw '…' literal: quotes,
    backslashes and line breaks in them must neither break the Python nor change a value."""
    nasty = {"project_name": "Zoë's \"x\" \\ \\' ''' \\n", "description": "a\nb", "author_name": "\\"}
    context = rendered(**{**GOOD, "project_slug": "zoe", **nasty})
    environment = StrictEnvironment(context={"cookiecutter": context})
    source = environment.from_string(HOOK_FILE.read_text()).render(cookiecutter=context)

    calls = [node for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "main"]
    assert len(calls) == 1
    assert hook.answers_from(json.loads(calls[0].args[0].value)) == hook.answers_from(context)


# --- a few real bakes: the hook and the filter are wired in ------------------------------


@pytest.fixture(autouse=True)
def _rendered_hooks_in_pytest_tmp(monkeypatch, tmp_path_factory):
    # cookiecutter writes each rendered hook to NamedTemporaryFile(delete=False), never removed.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.getbasetemp()))


def leftovers(tmp_path: Path) -> list[str]:
    """What is left under the test's tmp dir besides the empty dir pytest-cookies
    bakes into (tmp_path/cookies/bake00), if it got that far."""
    expected = {tmp_path / "cookies", tmp_path / "cookies" / "bake00"}
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p not in expected)


def test_a_bake_the_hook_refuses_raises_and_leaves_nothing(cookies, capfd, tmp_path):
    result = cookies.bake(extra_context={**GOOD, "port": "0"})

    assert result.exit_code != 0
    assert isinstance(result.exception, FailedHookException)
    assert "port '0' is not valid" in capfd.readouterr().err
    assert leftovers(tmp_path) == []


def test_cli_refusal_is_one_sentence_and_leaves_the_output_dir_as_it_was(tmp_path):
    """A slug 'a/b' is refused by checked_slug before cookiecutter makes any directory: the
    user's own empty dir `a` stays, and the CLI prints the sentence without a traceback."""
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    cli = Path(sys.executable).with_name("cookiecutter")
    result = subprocess.run(
        [cli, "--no-input", "--output-dir", out, TEMPLATE, "project_slug=a/b"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},  # replay files go under this HOME
    )

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert len([line for line in output.splitlines() if line.startswith("project_slug 'a/b'")]) == 1
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


def test_good_answers_bake(cookies):
    result = cookies.bake(extra_context=GOOD)

    assert not isinstance(result.exception, FailedHookException)
    assert result.exit_code == 0, result.exception
