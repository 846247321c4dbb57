"""Baking the template: the tree, no cookiecutter leftovers, valid Python, TOML and shell.

Fast: real cookiecutter bakes, no venvs. The generated project's own behaviour (make,
pip, the tarball) is tested in test_project.py.
"""
from __future__ import annotations

import ast
import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import bake, missing
from markupsafe import escape

# What the default answers bake to; each answer set below changes some of it.
DEFAULTS = dict(name="My Flask App", slug="my-flask-app", package="my_flask_app", version="0.1.0",
                python="3.10", port=8000, author="Your Name",
                description="A Flask application that tests, packs and deploys itself.")
QUOTED_NAME = 'Zoë\'s "Café" App'
# answer set: (answers given, what differs from DEFAULTS in the bake)
ANSWER_SETS = {
    "defaults": ({}, {}),
    "named": ({"project_name": "Shop Front"}, dict(name="Shop Front", slug="shop-front", package="shop_front")),
    "explicit": (
        {"project_slug": "api_v2", "package_name": "api_v2", "port": "9001", "version": "2.0.0rc1",
         "python_version": "3.12"},
        dict(slug="api_v2", package="api_v2", port=9001, version="2.0.0rc1", python="3.12"),
    ),
    "quoted": (
        {"project_name": QUOTED_NAME, "project_slug": "zoes-cafe",
         "description": 'It\'s a "café" – ünïcode', "author_name": 'Zoë "Z" O\'Brien'},
        dict(name=QUOTED_NAME, slug="zoes-cafe", package="zoes_cafe",
             description='It\'s a "café" – ünïcode', author='Zoë "Z" O\'Brien'),
    ),
}

TREE = [
    "Makefile", "setup.py", "pyproject.toml", "requirements.txt", "requirements-dev.txt", "README.md",
    "config/base.ini", "config/dev.ini", "config/test.ini", "config/prod.ini",
    "src/{package}/__init__.py", "src/{package}/config.py", "src/{package}/views.py",
    "src/{package}/wsgi.py", "src/{package}/cli.py",
    "src/{package}/templates/index.html", "src/{package}/static/style.css",
    "deploy/remote.sh", "deploy/gunicorn.conf.py", "deploy/host/__main__.py", "deploy/host/cli.py",
    "deploy/bundle.py", "deploy/pack.py",
    "tests/conftest.py",
]
LEFTOVERS = ("{{ cookiecutter", "{{cookiecutter", "{%")
FLASK_TEMPLATE = "src/{package}/templates/index.html"  # in _copy_without_render


@pytest.fixture(scope="module", params=ANSWER_SETS, ids=list(ANSWER_SETS))
def baked(request, tmp_path_factory):
    answers, changes = ANSWER_SETS[request.param]
    return bake(tmp_path_factory.mktemp(request.param), **answers), {**DEFAULTS, **changes}


def files(project: Path) -> list[Path]:
    """The baked files, less bytecode a local run may have left in the template checkout."""
    return sorted(p for p in project.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def call_keywords(source: str, function: str) -> dict[str, ast.expr]:
    """The keyword arguments of the first call to `function` (a name or attribute)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if called == function:
                return {k.arg: k.value for k in node.keywords}
    raise AssertionError(f"no call to {function}()")


def test_tree_is_complete(baked):
    project, expected = baked
    assert project.name == expected["slug"]
    missing = [p for p in (t.format(**expected) for t in TREE) if not (project / p).is_file()]
    assert not missing
    assert list((project / "tests").glob("test_*.py"))


def test_no_cookiecutter_leftovers(baked):
    project, expected = baked
    flask_template = project / FLASK_TEMPLATE.format(**expected)
    found = {
        str(path.relative_to(project)): mark
        for path in files(project)
        if path != flask_template
        for mark in LEFTOVERS
        if mark in path.read_text(encoding="utf-8")
    }
    assert not found
    assert not [p for p in files(project) if "cookiecutter" in str(p.relative_to(project))]


def test_flask_template_is_copied_unrendered(baked):
    project, expected = baked
    page = (project / FLASK_TEMPLATE.format(**expected)).read_text(encoding="utf-8")
    assert "{{ project_name }}" in page and "{{ url_for(" in page


def test_every_python_file_compiles(baked):
    project, _ = baked
    for path in project.rglob("*.py"):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_setup_py_metadata(baked):
    project, expected = baked
    keywords = call_keywords((project / "setup.py").read_text(encoding="utf-8"), "setup")
    # find_packages(...) and package_files(): calls, checked by building (test_project.py)
    setup = {k: ast.literal_eval(v) for k, v in keywords.items() if k not in ("packages", "package_data")}
    package = expected["package"]
    assert setup["name"] == expected["slug"]
    assert setup["version"] == expected["version"]
    assert setup["python_requires"] == f">={expected['python']}"
    assert setup["entry_points"]["console_scripts"] == [f"{package} = {package}.cli:main"]
    assert ast.unparse(keywords["package_data"]) == "{PACKAGE: package_files()}"  # every file of the package


def test_setup_py_runs_and_keeps_quoted_answers(baked):
    """Running setup.py (not just parsing it) gives back each answer as typed."""
    project, expected = baked
    out = subprocess.run(
        [sys.executable, "setup.py", "--name", "--version", "--description", "--author"],
        cwd=project, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    wanted = [expected[k] for k in ("slug", "version", "description", "author")]
    assert out[-4:] == wanted


def test_package_keeps_quoted_project_name(baked):
    project, expected = baked
    source = (project / "src" / expected["package"] / "__init__.py").read_text(encoding="utf-8")
    module = ast.parse(source)
    assert ast.get_docstring(module).startswith(expected["name"])
    assert ast.literal_eval(call_keywords(source, "update")["PROJECT_NAME"]) == expected["name"]
    assert ast.literal_eval(next(
        n.value for n in module.body if isinstance(n, ast.Assign) and n.targets[0].id == "__version__"
    )) == expected["version"]


def test_generated_test_expects_the_name_as_autoescaped(baked):
    """Flask autoescapes the name in the page: quotes and apostrophes become entities."""
    project, expected = baked
    source = (project / "tests" / "test_app.py").read_text(encoding="utf-8")
    strings = {n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert str(escape(expected["name"])) in strings


def test_pyproject_holds_only_build_system_and_tools(baked):
    project, _ = baked
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert "build-system" in pyproject
    assert set(pyproject) <= {"build-system", "tool"}


def test_base_ini_port_is_the_answer(baked):
    project, expected = baked
    parser = configparser.ConfigParser()
    parser.read(project / "config" / "base.ini", encoding="utf-8")
    assert parser.getint("server", "port") == expected["port"]
    assert parser.get("deploy", "dir") == f"apps/{expected['slug']}"


def test_remote_sh_parses(baked):
    project, _ = baked
    result = subprocess.run(["sh", "-n", project / "deploy" / "remote.sh"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def registry(project):
    """The host program's commands, from its registry: {name: (make target?, recorded?)}."""
    code = ("import json, sys; sys.path.insert(0, 'deploy'); import host.commands; from host.cli import COMMANDS; "
            "print(json.dumps({n: [c.target, c.recorded] for n, c in COMMANDS.items()}))")
    result = subprocess.run([sys.executable, "-S", "-c", code], cwd=project, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_host_commands_have_make_targets_and_the_reverse(baked, tmp_path):
    """The host program's registry is the one list of its commands: those marked as make
    targets are each a target (help line, single host and several) running that command,
    and the Makefile runs no command the registry lacks."""
    project, _ = baked
    makefile = (project / "Makefile").read_text()
    commands = registry(project)
    host = [name.replace("_", "-") for name, (target, _) in commands.items() if target]  # lock_status: lock-status
    assert host
    refused = subprocess.run(["sh", project / "deploy" / "remote.sh", "no-such-command"], capture_output=True,
                             text=True, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path),
                                             "APP_DIR": str(tmp_path / "app")})
    usage = re.search(r"unknown command 'no-such-command' \(([a-z_ ]+)\)", refused.stderr)
    assert refused.returncode == 1 and usage, refused.stderr
    assert usage[1].split() == list(commands)

    # the Makefile names no host command, and runs none that the registry lacks
    for command in host:
        assert not re.search(rf"^{command}:", makefile, re.M), f"{command}: the Makefile lists it again"
    ship = "\n".join(p.read_text() for p in (project / "deploy" / "ship").glob("*.py"))
    called = set(re.findall(r"\.(?:run|attached)\(\"([a-z_]+)\"", ship))
    assert called and called <= {*commands, "probe"}, called - set(commands)  # the bootstrap answers the probe

    helped = subprocess.run(["make", "--no-print-directory", "help"], cwd=project, capture_output=True, text=True)
    assert set(host) <= set(re.findall(r"^  ([a-z-]+) ", helped.stdout, re.M)), helped.stdout + helped.stderr
    # each is the deploy program's target of that name, for one host or several (it reads REMOTE_HOSTS)
    one = subprocess.run(["make", "-n", "--no-print-directory", *host, "REMOTE_HOST=h"],
                         cwd=project, capture_output=True, text=True)
    assert re.findall(r"deploy/ship --project \S+ \S+ \S+ \S+ (\S+)$", one.stdout, re.M) == host, one.stdout
    code = ("import sys; sys.argv = ['x']; sys.path.insert(0, 'deploy'); import ship.__main__ as m; "
            "m.register_host_commands(m.host_targets()); print(' '.join(m.TARGETS))")
    ran = subprocess.run([sys.executable, "-S", "-c", code], cwd=project, capture_output=True, text=True)
    assert set(host) <= set(ran.stdout.split()), ran.stdout + ran.stderr


def test_the_bundle_runs_as_sh_and_as_python_and_is_the_same_for_the_same_sources(baked, tmp_path):
    """build/remote.sh: the sh bootstrap, then the host program as a zip that Python runs."""
    project, _ = baked
    first, second = tmp_path / "a.sh", tmp_path / "b.sh"
    for out in (first, second):
        subprocess.run([sys.executable, project / "deploy" / "bundle.py", out], check=True)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes().startswith((project / "deploy" / "remote.sh").read_bytes())
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "APP_DIR": str(tmp_path / "app")}
    helped = subprocess.run(["sh", first, "help"], capture_output=True, text=True, env=env)
    assert helped.returncode == 0 and "  deploy " in helped.stdout, helped.stderr
    probed = subprocess.run(["sh", first, "probe"], capture_output=True, text=True, env=env)
    facts = json.loads(probed.stdout)
    assert facts["python_version"] and facts["venv"] == "ok" and facts["current"] is None, probed.stdout + probed.stderr
    assert not (tmp_path / "app").exists(), "the probe wrote to the host"


def test_remote_sh_passes_shellcheck(baked):
    if not shutil.which("shellcheck"):
        missing("shellcheck not found: apt-get install shellcheck")
    project, _ = baked
    result = subprocess.run(["shellcheck", "-S", "warning", project / "deploy" / "remote.sh"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
