"""A real app's files and dependencies reach the host, as a user porting one would find out.

A bake grows what every real Flask app has: a blueprint whose template sits in a
subfolder, a static file in a subfolder, a data file read with open_resource, a file
in the instance folder, and a dependency of its own in requirements.txt. It is deployed
over the private sshd, and each is checked over HTTP. make pack refuses what would
leave the host short (a file the wheel lacks, a symlink, a lock that disagrees with
setup.py), and the smoke boot refuses a release whose home page fails.
"""
from __future__ import annotations

import http.client
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import bake
from harness.app import App, make, new_app, output

ADMIN = '''"""A blueprint of the user's own: a nested template, a data file, the instance folder."""
import os

import six
from flask import Blueprint, current_app, render_template

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/")
def panel():
    seed = current_app.open_resource("sql/seed.sql").read().decode()
    return render_template("admin/panel.html", seed=seed, six=six.__version__)


@bp.post("/visits")
def visit():
    path = os.path.join(current_app.instance_path, "visits.txt")
    with open(path, "a") as handle:
        handle.write("visit\\n")
    with open(path) as handle:
        return {"visits": len(handle.readlines()), "path": path}
'''
PANEL = "<h1>{{ 'admin' | upper }} panel</h1><pre>{{ seed }}</pre><p>six {{ six }}</p>\n"
LOGO = '<svg xmlns="http://www.w3.org/2000/svg"><title>logo</title></svg>\n'
SEED = "INSERT INTO note (text) VALUES ('seeded');\n"
SIX = "six==1.17.0"


def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A bake with the user's own blueprint, files and dependency, its venv made."""
    project = bake(tmp_path_factory.mktemp("real"), project_slug="realapp", database="none")
    package = project / "src" / "realapp"
    (package / "admin.py").write_text(ADMIN)
    for name, text in (("templates/admin/panel.html", PANEL), ("static/img/logo.svg", LOGO), ("sql/seed.sql", SEED)):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    init = package / "__init__.py"
    init.write_text(init.read_text().replace(
        "    app.register_blueprint(bp)\n",
        "    app.register_blueprint(bp)\n\n    from .admin import bp as admin_bp\n\n    app.register_blueprint(admin_bp)\n"))
    # In the lock only, not in setup.py: the host must install every pinned wheel.
    requirements = project / "requirements.txt"
    requirements.write_text(requirements.read_text() + f"{SIX}\n")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    make(project, "venv")
    return project


@pytest.fixture(scope="module")
def app(project, sshd_host, tmp_path_factory, request) -> App:
    app = new_app(project, sshd_host, tmp_path_factory, request)
    app.deploy()
    return app


def test_nested_template_static_file_data_file_and_dependency_reach_the_host(app):
    status, page = get(app.port, "/admin/")
    assert status == 200, page
    assert "<h1>ADMIN panel</h1>" in page  # the nested template, rendered by Jinja on the host
    assert "INSERT INTO note (text) VALUES (&#39;seeded&#39;);" in page  # the data file
    assert "six 1.17.0" in page  # a dependency pinned only in requirements.txt
    assert get(app.port, "/static/img/logo.svg") == (200, LOGO)
    release = app.dir / "current"
    assert list(release.glob("venv/lib/python*/site-packages/six.py")), "six is not installed in the release"


def test_instance_folder_is_shared_and_survives_redeploy_and_rollback(app):
    status, body = get(app.port, "/admin/visits", "POST")
    assert status == 200, body
    assert f'"path":"{app.dir.resolve()}/shared/instance/visits.txt"' in body.replace(" ", "")
    first = int(re.search(r'"visits":\s*(\d+)', body)[1])
    before = app.current()
    app.deploy()
    assert app.current() != before
    assert f'"visits":{first + 1}' in get(app.port, "/admin/visits", "POST")[1].replace(" ", "")
    app.make("rollback")
    assert app.current() == before
    assert f'"visits":{first + 2}' in get(app.port, "/admin/visits", "POST")[1].replace(" ", "")
    assert (app.dir / "shared" / "instance" / "visits.txt").read_text().count("visit") == first + 2


def test_a_release_whose_home_page_fails_is_refused_by_the_smoke_boot(app, project):
    views = project / "src" / "realapp" / "views.py"
    original = views.read_text()
    before = app.current()
    broken = original.replace('def index() -> str:\n', 'def index() -> str:\n    if current_app.config["RELEASE_ID"] != "dev":\n'
                              '        raise RuntimeError("the home page fails on the host")\n')
    assert broken != original
    try:
        views.write_text(broken)
        result = app.make("deploy", check=False)
    finally:
        views.write_text(original)
    out = output(result)
    assert result.returncode != 0, out
    assert "failed its smoke test: GET / answered 500" in out, out
    assert "RuntimeError: the home page fails on the host" in out, "the smoke log's tail is not shown:\n" + out
    assert "smoke_paths:" not in out  # refused in that step: it never finished
    assert app.current() == before and app.healthz()["release"] == before
    assert get(app.port, "/")[0] == 200


def test_smoke_paths_are_asked_after_healthz_and_timed(app):
    result = app.deploy()
    steps = re.findall(r"^\s+(\w+): [\d.]+s$", result.stdout, re.M)
    assert steps.index("smoke_boot") < steps.index("smoke_paths") < steps.index("switch"), result.stdout


# --- make pack refuses a release that would leave the host short ------------------------


def pack_fails(project: Path, edits: dict[Path, str]) -> str:
    """make pack with EDITS (file: new text) in place; the files are put back after. The
    venv is left as it is (its stamp made newer): only the pack is under test."""
    originals = {path: path.read_text() if path.exists() else None for path in edits}
    try:
        for path, text in edits.items():
            path.write_text(text)
        stamp = project / ".venv" / ".installed"
        os.utime(stamp, (time.time() + 1, time.time() + 1))
        result = make(project, "pack", check=False)
    finally:
        for path, text in originals.items():
            path.unlink() if text is None else path.write_text(text)
    assert result.returncode != 0, output(result)
    assert "Traceback" not in output(result)
    return result.stderr


def test_pack_names_a_file_the_wheel_would_lack(project):
    setup = project / "setup.py"
    dropped = setup.read_text().replace("    include_package_data=False,\n",
                                        '    include_package_data=False,\n    exclude_package_data={PACKAGE: ["sql/*"]},\n')
    err = pack_fails(project, {setup: dropped})
    assert "the wheel lacks 1 file(s) of src/realapp/" in err and "src/realapp/sql/seed.sql" in err, err


def test_pack_names_a_symlink_in_the_package(project):
    link = project / "src" / "realapp" / "static" / "shadow"
    link.symlink_to("/etc/hostname")
    try:
        err = pack_fails(project, {})
    finally:
        link.unlink()
    assert "src/realapp/static/shadow is a symlink" in err, err


def test_pack_names_an_unpinned_requirement_and_a_pin_outside_its_range(project):
    setup, requirements = project / "setup.py", project / "requirements.txt"
    unpinned = setup.read_text().replace('"gunicorn>=27,<28"', '"gunicorn>=27,<28", "idna>=3"')
    outside = requirements.read_text().replace("Flask==3.1.3", "Flask==3.0.3")
    err = pack_fails(project, {setup: unpinned, requirements: outside})
    assert "idna is required by setup.py (idna>=3) but not pinned in requirements.txt" in err, err
    assert "Flask==3.0.3 in requirements.txt is outside setup.py's range (Flask" in err, err


def test_pack_names_a_resolved_dependency_the_lock_does_not_pin(project):
    requirements = project / "requirements.txt"
    err = pack_fails(project, {requirements: re.sub(r"(?m)^blinker==.*\n", "", requirements.read_text())})
    assert "the wheelhouse needs blinker 1.9.0" in err and "does not pin: add blinker==1.9.0" in err, err
