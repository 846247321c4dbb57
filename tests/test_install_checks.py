"""What the host's install refuses, and what it never keeps, in real deploys as root (the
private sshd logs in as the user running the tests: root here, and in CI):

- a wheel that pypa's installer cannot install stops the deploy before the switch, with one
  sentence naming it, and the running release goes on serving;
- a tarball packed by an ordinary local user (whose uid tar records) deploys as root with
  only root-owned files;
- a crafted tarball holding an absolute path, a `..`, a `//`, a link, a device or a fifo is
  refused before anything is unpacked, and nothing is written outside .incoming.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import uuid
import zipfile
from pathlib import Path

import pytest
from harness.app import new_app

NOBODY = 65534


@pytest.fixture(scope="module")
def app(baked_project, sshd_host, tmp_path_factory, request):
    if os.geteuid() != 0:
        pytest.fail("these tests deploy as root (the sshd logs in as the user running them): run them as root")
    deployed = new_app(baked_project, sshd_host, tmp_path_factory, request)
    deployed.deploy()
    return deployed


def host_deploy(app, tarball: Path) -> subprocess.CompletedProcess[str]:
    """Upload TARBALL into .incoming with scp and run the host's own deploy on it."""
    name = tarball.name
    subprocess.run(["scp", "-q", *shlex.split(app.host.ssh_opts), str(tarball),
                    f"{app.host.host_alias}:{app.dir}/.incoming/{name}"], check=True)
    sha = hashlib.sha256(tarball.read_bytes()).hexdigest()
    return app.host.run(f"APP_DIR={app.dir} PORT={app.port} DEPLOY_WHO=test sh {app.dir}/remote.sh deploy {name} {sha}",
                        timeout=180)


def release_folder(app) -> Path:
    """The packed folder of the release APP runs: build/ may hold others, packed for other
    targets by tests before (several Pythons), of the same shared bake."""
    release = dict(line.partition("=")[::2] for line in (app.dir / "current" / "RELEASE").read_text().splitlines())
    folder = app.project / "build" / f"my-flask-app-{release['version']}-{release['target']}"
    assert folder.is_dir(), sorted(p.name for p in (app.project / "build").iterdir())
    return folder


def test_a_wheel_installer_cannot_install_fails_the_deploy_before_the_switch(app):
    running, before = app.release(), app.releases()
    cached = next((app.project / "build" / "wheels").glob("blinker-*.whl"))
    saved = cached.read_bytes()
    with zipfile.ZipFile(io.BytesIO(saved)) as good, zipfile.ZipFile(cached, "w") as broken:
        for info in good.infolist():  # a real wheel, but of a Wheel-Version no installer knows
            data = good.read(info)
            if info.filename.endswith(".dist-info/WHEEL"):
                data = re.sub(rb"Wheel-Version: \S+", b"Wheel-Version: 2.0", data)
            broken.writestr(info, data)
    try:
        failed = app.deploy(check=False)
    finally:
        cached.write_bytes(saved)
    assert failed.returncode != 0
    said = [line for line in failed.stderr.splitlines() if "blinker" in line]
    assert len(said) == 1 and re.search(r"wheel blinker-\S+\.whl cannot be installed \(Incompatible Wheel-Version 2\.0.*\); "
                                        r"nothing was activated", said[0]), failed.stdout + failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr
    assert app.release() == running == app.current()  # still serving, never switched
    assert "switch:" not in failed.stdout
    (new,) = app.releases() - before
    assert (app.dir / "releases" / new / ".unfinished").exists()  # never activated, cleaned later
    assert app.deploy().returncode == 0 and app.current() not in (running, new)


def test_a_tarball_an_ordinary_user_packed_deploys_as_root_with_only_root_owned_files(app):
    packing = Path(tempfile.mkdtemp(prefix="cfd-packed-by-nobody-"))  # pytest's own tmp is root's alone (0700)
    try:
        folder = release_folder(app)
        shutil.copytree(folder, packing / folder.name)
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", packing], check=True)
        tarball = packing / f"{folder.name}-nobody.tar.gz"
        as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        subprocess.run([*as_nobody, "tar", "-C", packing, "-czf", tarball, folder.name], check=True)
        with tarfile.open(tarball) as tar:
            assert {m.uid for m in tar.getmembers()} == {NOBODY}  # what tar -x as root would have kept
        before = app.releases()
        result = host_deploy(app, tarball)
    finally:
        shutil.rmtree(packing)
    assert result.returncode == 0, result.stdout + result.stderr
    (new,) = app.releases() - before
    assert app.current() == new == app.release()
    release = app.dir / "releases" / new
    owners = {(p.lstat().st_uid, p.lstat().st_gid) for p in [release, *release.rglob("*")]}
    assert owners == {(0, 0)}, sorted(owners)


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "double-slash", "symlink", "hardlink", "fifo", "device"])
def test_a_crafted_tarball_is_refused_before_anything_is_unpacked(app, tmp_path, kind):
    folder = release_folder(app)
    top = f"{folder.name}-{kind}"
    outside = Path("/tmp") / f"cfd-crafted-{uuid.uuid4().hex}"  # where an absolute member would land
    bad = tarfile.TarInfo({"absolute": str(outside), "dotdot": f"{top}/../../../crafted-{kind}",
                           "double-slash": f"{top}//deploy/crafted", "symlink": f"{top}/deploy/crafted",
                           "hardlink": f"{top}/deploy/crafted", "fifo": f"{top}/crafted",
                           "device": f"{top}/crafted"}[kind])
    bad.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE,
                "device": tarfile.CHRTYPE}.get(kind, tarfile.REGTYPE)
    bad.linkname = "/etc/shadow" if kind in ("symlink", "hardlink") else ""
    payload = b"planted\n" if bad.type == tarfile.REGTYPE else b""
    bad.size = len(payload)
    tarball = tmp_path / f"{top}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:  # the whole release first, the bad member last
        tar.add(folder, arcname=top)
        tar.addfile(bad, io.BytesIO(payload) if payload else None)
    running, before = app.release(), app.releases()
    tree = {p for p in app.dir.rglob("*") if ".incoming" not in p.parts and "shared" not in p.parts}

    refused = host_deploy(app, tarball)
    assert refused.returncode != 0
    why = "is a link, a device or a fifo, not a file" if bad.type != tarfile.REGTYPE else \
        "is not a relative path inside the release"
    said = [line for line in refused.stderr.splitlines() if " holds " in line]
    assert len(said) == 1 and f"upload {tarball.name} holds {bad.name!r} {why}; nothing was installed" in said[0], \
        refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
    assert app.release() == running and app.releases() == before
    assert {p for p in app.dir.rglob("*") if ".incoming" not in p.parts and "shared" not in p.parts} == tree
    assert not outside.exists() and not list(app.dir.parent.rglob("crafted*"))
    assert not [p for p in (app.dir / ".incoming").iterdir() if p.name.startswith("unpack.")]
