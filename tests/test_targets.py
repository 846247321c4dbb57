"""Releases built for the host they go to: hosts whose python3 is 3.10, 3.12 or 3.13 (pyenv's,
chosen per login by a private sshd), packed here with this machine's Python; a 3.9 host
refused before any upload; a release for another Python refused on the host; the host's
interpreter chosen in the INI; a dependency without a wheel; the wheel cache.

A pyenv interpreter that is missing fails the tests that need it, naming it: never a skip.
"""
from __future__ import annotations

import os
import re
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from conftest import bake, make
from harness.app import App, healthz, new_app, output, tree
from harness.sshd import PrivateSshd, python_host_env

HOST_PYTHONS = ["3.10", "3.12", "3.13"]


@pytest.fixture(scope="module")
def python_hosts(tmp_path_factory, sshd_host):  # sshd_host: sshd is installed
    """A private sshd per Python version, each login's python3 that version."""
    hosts: dict[str, PrivateSshd] = {}
    try:
        for version in [*HOST_PYTHONS, "3.9"]:
            base = tmp_path_factory.mktemp(f"sshd-py{version}")
            hosts[version] = PrivateSshd(base, login_env=python_host_env(version)).start()
        yield hosts
    finally:
        for host in hosts.values():
            host.stop()


def local_target(project: Path) -> str:
    return subprocess.run(["python3", "deploy/target.py", "local"], cwd=project, check=True,
                          capture_output=True, text=True).stdout.strip()


def venv_python(app: App) -> str:
    cfg = (app.dir / "current" / "venv" / "pyvenv.cfg").read_text()
    return re.search(r"^version(?:_info)? = (\S+)", cfg, re.M)[1]


def release_fields(app: App) -> dict[str, str]:
    text = (app.dir / "current" / "RELEASE").read_text()
    return dict(line.split("=", 1) for line in text.splitlines())


@pytest.fixture(scope="module")
def on_312(baked_project, python_hosts, tmp_path_factory, request) -> App:
    """An app deployed to the 3.12 host, serving."""
    app = new_app(baked_project, python_hosts["3.12"], tmp_path_factory, request)
    app.deploy()
    return app


@pytest.mark.parametrize("version", HOST_PYTHONS)
def test_a_host_of_each_python_gets_a_release_built_for_it(baked_project, python_hosts, version,
                                                           tmp_path_factory, request):
    host = python_hosts[version]
    said = host.run("python3 -c 'import platform; print(platform.python_version())'", check=True).stdout
    assert said.startswith(f"{version}."), f"the test host's python3 is {said}, not {version}"
    app = new_app(baked_project, host, tmp_path_factory, request)
    result = app.deploy()
    tag = "cp" + version.replace(".", "")
    assert re.search(rf"^==> .*, for {tag}-manylinux_2_\d+_x86_64$", result.stdout, re.M), result.stdout
    answer = healthz(app.port)
    assert answer["status"] == "ok" and answer["release"] == app.current()
    assert venv_python(app).startswith(f"{version}.")
    # MarkupSafe is compiled: the release says which Python and glibc its wheels need.
    assert re.fullmatch(rf"{tag}-manylinux_2_\d+_x86_64", release_fields(app)["target"])
    assert [w.name for w in (app.dir / "current" / "wheels").glob("markupsafe-*")][0].split("-")[2] == tag


def test_a_second_pack_for_a_target_downloads_nothing(baked_project):
    target = "cp312-manylinux_2_36_x86_64"
    make(baked_project, "pack", PACK_TARGET=target)
    cache = baked_project / "build" / "wheels"
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    listing = baked_project / "build" / "wheelhouse" / f"{target}.txt"
    listed = listing.stat().st_mtime_ns
    again = make(baked_project, "pack", PACK_TARGET=target)
    count = len(listing.read_text().split()) - 1  # the first word is the key
    assert f"{target}: {count} wheels (0 downloaded)" in again.stdout, again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == before
    assert listing.stat().st_mtime_ns == listed  # pip was not even asked

    # A new target downloads only what it lacks: its own builds of the compiled wheels
    # (MarkupSafe's, and SQLAlchemy's and greenlet's in a database project).
    compiled = [n for n in listing.read_text().split()[1:] if not n.endswith("-none-any.whl")]
    arm = make(baked_project, "pack", PACK_TARGET="cp313-manylinux_2_39_aarch64")
    assert f"cp313-manylinux_2_39_aarch64: {count} wheels ({len(compiled)} downloaded)" in arm.stdout, arm.stdout
    new = set(os.listdir(cache)) - set(before)
    assert {n.split("-")[0] for n in new} == {n.split("-")[0] for n in compiled}
    assert all("cp313" in n and n.endswith("aarch64.whl") for n in new), new


def test_several_targets_in_one_pack_share_what_they_can(baked_project):
    targets = "cp312-manylinux_2_36_x86_64 cp312-manylinux_2_39_x86_64 cp313-manylinux_2_36_x86_64"
    result = make(baked_project, "pack", PACK_TARGET=targets)
    packed = dict(line.split() for line in (baked_project / "build" / "packed.txt").read_text().splitlines())
    assert list(packed) == targets.split()
    # the same wheels for glibc 2.36 and 2.39: one tarball, named by what the wheels need
    assert packed["cp312-manylinux_2_36_x86_64"] == packed["cp312-manylinux_2_39_x86_64"]
    assert packed["cp312-manylinux_2_36_x86_64"] != packed["cp313-manylinux_2_36_x86_64"]
    assert all(re.search(r"-cp31[23]-manylinux_2_\d+_x86_64\.tar\.gz$", p) for p in packed.values()), result.stdout


def test_a_host_older_than_the_minimum_is_refused_before_any_upload(baked_project, python_hosts,
                                                                     tmp_path_factory, request):
    app = new_app(baked_project, python_hosts["3.9"], tmp_path_factory, request)
    started = time.monotonic()
    result = app.deploy(check=False)
    assert result.returncode != 0
    assert time.monotonic() - started < 15
    err = result.stderr
    assert re.search(r"deploy-test-host runs Python 3\.9\.\d+ \(python3\), older than this project's minimum 3\.10", err), err
    assert "HOST_PYTHON" in err and "nothing was uploaded" in err and "Traceback" not in err
    assert "==>" not in result.stdout  # not even tested or packed
    # the probe wrote nothing: no release, no upload (only the host program's copy and its folder)
    assert not (app.dir / "releases").exists() and os.listdir(app.dir / ".incoming") == []
    assert not (app.dir / "current").exists() and not (app.dir / ".deploy.lock").exists()
    # the plan refuses it too, by its version, writing nothing
    planned = app.make("plan", check=False)
    assert planned.returncode != 0 and "refused: deploy-test-host runs Python 3.9." in planned.stdout, planned.stdout
    assert not (app.dir / "releases").exists() and os.listdir(app.dir / ".incoming") == []
    # every other host command names the version too, in one sentence
    stop = app.make("stop", check=False)
    assert stop.returncode != 0 and "error: the host program needs Python 3.10 or newer; this is 3.9." in stop.stderr
    (app.dir / "remote.sh").unlink()  # nothing runs there: the teardown has nothing to stop


def test_a_release_for_another_python_is_refused_on_the_host(on_312, baked_project):
    app = on_312
    release, releases = app.release(), sorted(os.listdir(app.dir / "releases"))
    local = local_target(baked_project)
    make(baked_project, "pack", PACK_TARGET=local)  # this machine's Python, not the host's
    (tarball,) = [p for t, p in (line.split() for line in (baked_project / "build" / "packed.txt")
                                 .read_text().splitlines()) if t == local]
    with tarfile.open(baked_project / tarball) as tar:
        needs = [m for m in tar.getmembers() if m.name.endswith("/RELEASE")]
        built_for = re.search(r"^target=(\S+)", tar.extractfile(needs[0]).read().decode(), re.M)[1]
    result = app.make("host-deploy", check=False, RELEASE=tarball)
    assert result.returncode != 0
    err = result.stderr
    assert re.search(rf"deploy-test-host runs CPython 3\.12 on x86_64 with glibc [\d.]+ \(\S*python3?\S*, "
                     rf"cp312-manylinux_2_\d+_x86_64\), but this release was built for {re.escape(built_for)}", err), err
    assert "make pack PACK_TARGET=cp312-manylinux_2_" in err and "nothing was installed" in err
    assert "Traceback" not in err
    assert sorted(os.listdir(app.dir / "releases")) == releases
    assert os.listdir(app.dir / ".incoming") == []  # the refused upload is gone too
    assert app.release() == release and app.make("status").returncode == 0


def test_the_hosts_interpreter_is_chosen_in_the_ini(on_312, baked_project):
    """[deploy] python names another interpreter the host keeps: its venvs use that one."""
    app = on_312
    python313 = python_host_env("3.13")["PATH"].split(":")[0] + "/python3"
    prod = baked_project / "config" / "prod.ini"
    saved = prod.read_text()
    prod.write_text(saved + f"\n[deploy]\npython = {python313}\n")
    try:
        result = app.deploy()
    finally:
        prod.write_text(saved)
    assert re.search(r"^==> .*, for cp313-manylinux_2_\d+_x86_64$", result.stdout, re.M), result.stdout
    assert venv_python(app).startswith("3.13.")
    assert healthz(app.port)["release"] == app.current()

    bad = app.make("deploy", check=False, HOST_PYTHON="python3; rm -rf /")
    assert bad.returncode != 0 and "HOST_PYTHON must be a command or path" in bad.stderr
    missing = app.make("deploy", check=False, HOST_PYTHON="/nowhere/python3")
    assert missing.returncode != 0
    assert "deploy-test-host has no /nowhere/python3" in missing.stderr, output(missing)


def test_a_dependency_without_a_wheel_stops_pack_naming_it(tmp_path):
    """docopt 0.6.2 is published as a source distribution only."""
    project = bake(tmp_path, project_slug="nowheel")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    requirements = project / "requirements.txt"
    requirements.write_text(requirements.read_text() + "docopt==0.6.2\n")
    before = tree(project / "build") if (project / "build").exists() else {}
    result = make(project, "pack", check=False)
    assert result.returncode != 0
    err = result.stderr
    assert re.search(r"no wheel of docopt 0\.6\.2 for cp3\d+-manylinux_2_\d+_x86_64 \(CPython 3\.\d+ on x86_64", err), err
    assert "Pin a version of docopt that has wheels" in err and "wheels-extra/" in err
    assert "Traceback" not in err
    assert not list((project / "build").glob("*.tar.gz")) and before == {}

    # The way out: build the wheel on a machine of the target's platform, into wheels-extra/.
    subprocess.run([project / ".venv/bin/pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", project / "wheels-extra", "docopt==0.6.2"], check=True, capture_output=True)
    packed = make(project, "pack")
    tarball = next((project / "build").glob("nowheel-0.1.0-*.tar.gz"))
    with tarfile.open(tarball) as tar:
        assert [n for n in tar.getnames() if "/wheels/docopt-0.6.2-" in n], packed.stdout
