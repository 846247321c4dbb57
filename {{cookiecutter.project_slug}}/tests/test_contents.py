"""deploy/contents.py: the lock and the package's files, as make pack checks them."""
import importlib.util
import subprocess
import zipfile
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("contents", Path(__file__).parents[1] / "deploy" / "contents.py")
contents = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(contents)

PINS = {"flask": "3.1.3", "gunicorn": "27.0.1", "flask-login": "3.1.1", "psycopg": "3.3.9"}


def test_pins_are_read_by_canonical_name_with_comments_markers_and_options():
    pins, problems = contents.requirement_pins(
        "# the lock\nFlask==3.1.3\nFlask_Login == 3.1.1  # why\n"
        "tomli==2.5.0; python_version < '3.11'\n--find-links wheels-extra\npsycopg[binary]==3.3.9\n")
    assert problems == []
    assert pins == {"flask": "3.1.3", "flask-login": "3.1.1", "tomli": "2.5.0", "psycopg": "3.3.9"}


@pytest.mark.parametrize("line", ["Flask>=3.1", "Flask", "Flask==3.*,<4", "git+https://example.invalid/x.git"])
def test_a_line_that_is_no_pin_is_named(line):
    _, problems = contents.requirement_pins(f"gunicorn==27.0.1\n{line}\n")
    assert problems == [(f"requirements.txt line 2: {line!r} is not a pin (name==version): "
                         "the host installs exactly the versions listed there")]


def test_every_requirement_pinned_within_its_range_passes():
    requires = ["Flask<4,>=3.1", "gunicorn<28,>=27", "Flask-Login>=3.1,<4", "psycopg[binary]<4,>=3.2",
                "pytest; extra == 'dev'"]  # an extra is not installed on the host
    assert contents.lock_problems(requires, PINS) == []


def test_a_requirement_without_a_pin_is_named():
    assert contents.lock_problems(["six>=1.16"], PINS) == [
        "six is required by setup.py (six>=1.16) but not pinned in requirements.txt: add six==<version>"]


def test_a_pin_outside_the_range_is_named():
    (problem,) = contents.lock_problems(["Flask<4,>=3.2"], PINS)
    assert problem.startswith("Flask==3.1.3 in requirements.txt is outside setup.py's range (Flask")


def test_a_resolved_wheel_without_a_pin_is_named_but_the_installer_is_not():
    names = ["flask-3.1.3-py3-none-any.whl", "blinker-1.9.0-py3-none-any.whl", "pip-26.0-py3-none-any.whl"]
    assert contents.unpinned_wheels(names, PINS, {"pip"}) == [
        ("the wheelhouse needs blinker 1.9.0 (a dependency of a pinned package), which requirements.txt "
         "does not pin: add blinker==1.9.0")]


def test_requirements_are_read_from_the_wheels_metadata(tmp_path):
    wheel = tmp_path / "app-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("app-1.0.dist-info/METADATA",
                         "Metadata-Version: 2.1\nName: app\nRequires-Dist: Flask<4,>=3.1\nRequires-Dist: gunicorn\n\n")
    assert contents.wheel_requirements(wheel) == ["Flask<4,>=3.1", "gunicorn"]


@pytest.fixture(params=["git", "no git"])
def package(request, tmp_path):
    """A package tree with nested data files, in a git repository or not."""
    root = tmp_path / "src" / "app"
    for name in ("__init__.py", "templates/admin/panel.html", "static/img/logo.svg", "sql/seed.sql",
                 "__pycache__/x.cpython-311.pyc", "old.pyc"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    if request.param == "git":
        subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
        (tmp_path / ".gitignore").write_text("__pycache__/\n*.log\n")
        (root / "debug.log").write_text("ignored by git")
    return root


def test_every_file_but_compiled_and_ignored_ones_is_a_source(package):
    names = [path.relative_to(package).as_posix() for path in contents.package_sources(package)]
    assert names == ["__init__.py", "sql/seed.sql", "static/img/logo.svg", "templates/admin/panel.html"]


def test_a_wheel_that_holds_every_source_passes(package):
    wheel = ["app/__init__.py", "app/sql/seed.sql", "app/static/img/logo.svg", "app/templates/admin/panel.html"]
    assert contents.source_problems(package, "app", wheel) == []


def test_each_file_the_wheel_lacks_is_named(package):
    (problem,) = contents.source_problems(package, "app", ["app/__init__.py", "app/static/img/logo.svg"])
    assert problem.startswith(f"the wheel lacks 2 file(s) of {package}/")
    assert f"{package}/sql/seed.sql, {package}/templates/admin/panel.html" in problem


def test_a_symlink_in_the_package_is_named(package):
    (package / "static" / "passwd").symlink_to("/etc/passwd")
    wheel = ["app/__init__.py", "app/sql/seed.sql", "app/static/img/logo.svg", "app/templates/admin/panel.html"]
    assert contents.source_problems(package, "app", wheel) == [
        (f"{package}/static/passwd is a symlink: a release carries files, not links "
         "(copy the file in, or move what it points to into the package)")]
