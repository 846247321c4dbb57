"""Shared fixtures: a baked project (made once per session) and a private sshd host.

The helpers live in the harness package (tests/harness/); `make` is re-exported here for
the modules that import it from conftest. Under pytest-xdist each worker has its own
session, so its own baked project and sshd."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
# cookiecutter() puts the template root on sys.path for its `_extensions`
# (flask_deploy_answers); pytest-cookies also renders the context before calling it.
sys.path.append(str(TEMPLATE))

from harness import cpu  # noqa: E402
from harness.app import make  # noqa: E402,F401  (re-exported: `from conftest import make`)
from harness.sshd import PrivateSshd, host_path  # noqa: E402
from harness.venvs import make_venv  # noqa: E402

# The baked projects' make, and every host, start a real python3, not a pyenv shim (host_path).
os.environ["PATH"] = host_path()
# And they keep their compiled modules, as on a developer's machine: with this set (some
# sandboxes do), every start of the deploy program or a baked project's pytest compiles
# its modules afresh, a third of its CPU time.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def pytest_configure(config):
    cpu.register(config)  # CFD_CPU=FILE: each test's CPU time (tests/harness/cpu.py)


@pytest.fixture(scope="session", autouse=True)
def nested_pytest_temproot():
    """The baked projects' own pytest runs (make test, make deploy's tests) keep their temp
    directories apart from this run's: pytest prunes old numbered directories in its temp
    root, and this run's (a server's mounted rootfs, a live app) are not its to touch."""
    root = tempfile.mkdtemp(prefix="cfd-nested-pytest-")
    previous = os.environ.get("PYTEST_DEBUG_TEMPROOT")
    os.environ["PYTEST_DEBUG_TEMPROOT"] = root
    yield
    if previous is None:
        os.environ.pop("PYTEST_DEBUG_TEMPROOT", None)
    else:
        os.environ["PYTEST_DEBUG_TEMPROOT"] = previous
    shutil.rmtree(root, ignore_errors=True)


def missing(reason: str) -> None:
    """A tool a developer may lack: skip, naming what to install; in CI (CI=true), fail."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run every test: .ci/run installs it)", pytrace=False)
    pytest.skip(reason)


def bake(output_dir: Path, **answers: str) -> Path:
    """Bake the template for real (no input) and return the project directory."""
    project = cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(output_dir), extra_context=answers)
    return Path(project)


@pytest.fixture(scope="session")
def baked_project(tmp_path_factory) -> Path:
    """The default bake, a git repository with its venv (`make venv`, made once a run: harness/venvs.py)."""
    project = bake(tmp_path_factory.mktemp("bake"))
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    make_venv(project, tmp_path_factory)
    return project


@pytest.fixture(scope="session")
def sshd_host(tmp_path_factory):
    if not Path("/usr/sbin/sshd").exists() and not os.environ.get("SSHD_BIN"):
        missing("no sshd binary: apt-get install openssh-server")
    with PrivateSshd(tmp_path_factory.mktemp("sshd")) as host:
        yield host
