"""Day two: a project baked with cruft takes a template update and keeps the user's work.

What a user does: `cruft create` from the template's git repository, commit, change
the app; the template moves on; `cruft update` brings the change; `cruft check` passes;
`make test` still passes.  The template repository here is a fresh git repo holding a
copy of this checkout's template files (a clone would miss uncommitted work).
About 20 s: one `make venv`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEMPLATE, make

CRUFT = Path(sys.executable).with_name("cruft")
TEMPLATE_FILES = ["cookiecutter.json", "flask_deploy_answers.py", "hooks", "{{cookiecutter.project_slug}}"]
GIT_ENV = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.org"}

USER_VIEW = '''

@bp.get("/hello")
def hello() -> str:
    return "hello from the user"
'''
USER_TEST = '''def test_hello(client):
    assert client.get("/hello").get_data(as_text=True) == "hello from the user"
'''
TEMPLATE_TARGET = '''template-news: ## say what the last template update brought
\t@echo "news from the template"

'''
TEMPLATE_NEW_FILE = "docs/template-news.md"


def run(*command, cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def commit(repo: Path, env: dict, message: str) -> None:
    run("git", "add", "-A", cwd=repo, env=env)
    run("git", "commit", "-q", "-m", message, cwd=repo, env=env)


def snapshot(root: Path) -> dict[str, float]:
    """Every path under root with its mtime, less .git internals and the venv."""
    return {
        str(p.relative_to(root)): p.lstat().st_mtime
        for p in root.rglob("*")
        if not {".git", ".venv"} & set(p.relative_to(root).parts)
    }


@pytest.fixture
def env(tmp_path) -> dict:
    # cruft's and cookiecutter's temporary directories (and the rendered hook scripts
    # cookiecutter never removes) go under the test's own TMPDIR.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return {**os.environ, **GIT_ENV, "TMPDIR": str(tmp)}


@pytest.fixture
def template_repo(tmp_path, env) -> Path:
    repo = tmp_path / "template"
    repo.mkdir()
    for name in TEMPLATE_FILES:
        source = TEMPLATE / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__", ".venv", "build"))
        else:
            shutil.copy2(source, repo / name)
    run("git", "init", "-q", cwd=repo, env=env)
    commit(repo, env, "template")
    return repo


def test_update_brings_the_template_change_and_keeps_the_users(tmp_path, env, template_repo):
    out = tmp_path / "projects"
    out.mkdir()
    run(CRUFT, "create", template_repo, "--no-input", "--output-dir", out,
        "--extra-context", json.dumps({"project_name": "Day Two"}), cwd=tmp_path, env=env)
    project = out / "day-two"
    assert json.loads((project / ".cruft.json").read_text())["template"] == str(template_repo)
    run("git", "init", "-q", cwd=project, env=env)
    commit(project, env, "baked with cruft")

    # the user's work
    views = project / "src" / "day_two" / "views.py"
    views.write_text(views.read_text() + USER_VIEW)
    (project / "tests" / "test_hello.py").write_text(USER_TEST)
    commit(project, env, "a hello page")

    # the template moves on: a new file and a Makefile target
    makefile = template_repo / "{{cookiecutter.project_slug}}" / "Makefile"
    text = makefile.read_text()
    assert text.count("\nhelp: ") == 1
    makefile.write_text(text.replace("\nhelp: ", "\n" + TEMPLATE_TARGET + "help: "))
    news = template_repo / "{{cookiecutter.project_slug}}" / TEMPLATE_NEW_FILE
    news.write_text("# What's new in {{ cookiecutter.project_name }}\n")
    commit(template_repo, env, "template: template-news")
    template_before = snapshot(template_repo)

    assert run(CRUFT, "check", cwd=project, env=env, check=False).returncode != 0  # out of date now
    run(CRUFT, "update", "-y", cwd=project, env=env)

    assert (project / TEMPLATE_NEW_FILE).read_text() == "# What's new in Day Two\n"
    assert "template-news: ##" in (project / "Makefile").read_text()
    assert "hello from the user" in views.read_text()
    assert (project / "tests" / "test_hello.py").read_text() == USER_TEST
    assert not list(project.rglob("*.rej")) and not list(project.rglob("*.orig"))
    run(CRUFT, "check", cwd=project, env=env)
    make(project, "venv", timeout=300)
    assert "news from the template" in make(project, "template-news").stdout
    make(project, "test")
    assert "1 passed" in run(project / ".venv/bin/python", "-m", "pytest", "tests/test_hello.py",
                             cwd=project, env=env).stdout  # the user's test is there and passes
    # the template repository is as it was: cruft worked on clones in its own tmp dirs
    assert snapshot(template_repo) == template_before
    assert run("git", "status", "--porcelain", cwd=template_repo, env=env).stdout == ""


# answers, cruft create options, the field named
REFUSED = [
    # refused while cruft reads the answers, before any directory exists
    ({"project_slug": "a/b"}, [], "project_slug"),
    ({"project_slug": ""}, ["-f"], "project_slug"),  # with -f the project dir would be out/ itself
    # refused by the pre_gen hook, after cookiecutter made out/new (it removes it again) ...
    ({"project_slug": "new", "port": "0"}, [], "port"),
    # ... or took the existing out/a with -f (it leaves that alone)
    ({"project_slug": "a", "port": "0"}, ["-f"], "port"),
]


@pytest.mark.parametrize(("answers", "options", "field"), REFUSED,
                         ids=lambda v: json.dumps(v) if isinstance(v, dict) else " ".join(v) if isinstance(v, list) else v)
def test_refused_answer_leaves_nothing_and_removes_nothing(tmp_path, env, template_repo, answers, options,
                                                          field):
    out = tmp_path / "projects"
    (out / "a").mkdir(parents=True)  # the user's own empty dir, named like the refused slug
    (out / "keep.txt").write_text("mine")
    before, template_before = snapshot(out), snapshot(template_repo)

    result = run(CRUFT, "create", template_repo, "--no-input", "--output-dir", out, *options,
                 "--extra-context", json.dumps(answers), cwd=tmp_path, env=env, check=False)

    assert result.returncode != 0
    assert f"{field} {answers[field]!r}" in result.stdout + result.stderr
    assert snapshot(out) == before
    assert snapshot(template_repo) == template_before
