"""The generated project for real: make test, check-config, build, pack, an offline install,
make help and the checks of make variables. Real make, venvs and pip; nothing is mocked.

Everything runs in the session's default bake (`baked_project`, venv made once). Tests that
edit its config/ put every file back (`pristine_config`).
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import make
from harness.app import wait_for
from harness.release import install_as_the_host

# The local targets and those that upload; the host commands (start, stop, …) are read from
# the host program's registry, their one list (host_commands()).
REQUIRED_TARGETS = {
    "help", "venv", "run", "test", "check-config", "build", "pack", "clean", "copy", "deploy", "nginx-conf",
}


# --- helpers ------------------------------------------------------------------------


def names(project: Path) -> tuple[str, str, str]:
    """slug, package and version of a bake."""
    version = re.search(r'version="(.+)"', (project / "setup.py").read_text())[1]
    return project.name, project.name.replace("-", "_"), version


def host_commands(project: Path) -> set[str]:
    """The host commands that are make targets of the same name, from the host program's registry."""
    listed = subprocess.run([sys.executable, "-S", "deploy/host", "targets", "--make"], cwd=project,
                            capture_output=True, text=True, check=True).stdout
    assert listed.startswith("HOST_COMMANDS := "), listed
    return set(listed.split()[2:])


def normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "_", distribution).lower()


def wheel_id(wheel: str) -> tuple[str, str]:
    """('flask', '3.1.3') for flask-3.1.3-py3-none-any.whl."""
    name, version = Path(wheel).name.split("-")[:2]
    return normalise(name), version


def pinned(requirements: Path) -> set[tuple[str, str]]:
    pins = (line.split("#")[0].strip() for line in requirements.read_text().splitlines())
    return {(normalise(name), version) for name, version in (p.split("==") for p in pins if p)}


def every_file_content(tarball: Path):
    """(name, bytes) of every file in the tarball, and of every file inside its wheels."""
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            if member.isfile():
                data = tar.extractfile(member).read()
                yield member.name, data
                if member.name.endswith(".whl"):
                    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
                        for inner in wheel.namelist():
                            yield f"{member.name}!{inner}", wheel.read(inner)


def offline_env() -> dict[str, str]:
    """No pip configuration (this machine's points at local wheel mirrors) and no usable index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL="http://127.0.0.1:9/", PIP_NO_INDEX="1")
    return env


@pytest.fixture()
def pristine_config(baked_project):
    """The project's config/ directory, restored byte for byte (and extra files removed) afterwards."""
    config = baked_project / "config"
    saved = {path.name: path.read_bytes() for path in config.iterdir()}
    try:
        yield config
    finally:
        for path in config.iterdir():
            if path.name not in saved:
                path.unlink()
        for name, data in saved.items():
            (config / name).write_bytes(data)


# --- make test ----------------------------------------------------------------------


def test_make_test_passes_in_a_fresh_bake(baked_project):
    result = make(baked_project, "test")
    assert "dev: ok" in result.stdout and "prod: ok" in result.stdout
    count = re.search(r"(\d+) passed", result.stdout)
    assert count and int(count[1]) > 0, result.stdout
    assert "failed" not in result.stdout and "error" not in result.stdout


# --- make check-config --------------------------------------------------------------


def whole(text: str | bytes):
    return lambda _: text


def replace(old: str, new: str):
    def edit(text: str) -> str:
        assert old in text, f"{old!r} not in the file"
        return text.replace(old, new)

    return edit


# case: file, edit, the words one line of the output must hold (file, section, key, problem)
BAD_CONFIG = {
    "not-an-integer": ("test.ini", whole("[server]\nport = abc\n"),
                       ["config/test.ini", "[server] port", "'abc' is not an integer"]),
    "out-of-range": ("test.ini", whole("[server]\nport = 70000\n"),
                     ["config/test.ini", "[server] port", "70000 is out of range"]),
    "bad-bool": ("dev.ini", replace("debug = true", "debug = maybe"),
                 ["config/dev.ini", "[app] debug", "'maybe' is not a boolean"]),
    "bad-log-level": ("test.ini", replace("log_level = WARNING", "log_level = LOUD"),
                      ["config/test.ini", "[app] log_level", "'LOUD' is not one of"]),
    "unknown-section": ("prod.ini", lambda text: text + "\n[sever]\nport = 1\n",
                        ["config/prod.ini", "unknown section [sever]"]),
    "unknown-key": ("base.ini", replace("timeout = 30", "timeout = 30\ntimout = 30"),
                    ["config/base.ini", "[server] unknown key 'timout'"]),
    "missing-key": ("base.ini", replace("timeout = 30\n", ""),
                    ["[server] timeout is missing", "config/base.ini"]),
    "not-ini-text": ("test.ini", whole("This is a README, not settings.\n"),
                     ["config/test.ini", "not a valid INI file"]),
    "not-ini-binary": ("test.ini", whole(b"\x89PNG\r\n\x1a\n\x00\xff\xfe"),
                       ["config/test.ini", "not a valid INI file"]),
    "debug-in-prod": ("prod.ini", replace("debug = false", "debug = true"),
                      ["config/prod.ini", "[app] debug is on for prod"]),
}


@pytest.mark.parametrize("case", BAD_CONFIG)
def test_check_config_names_file_section_and_key(baked_project, pristine_config, case):
    name, edit, words = BAD_CONFIG[case]
    new = edit((pristine_config / name).read_text())
    (pristine_config / name).write_bytes(new if isinstance(new, bytes) else new.encode())
    result = make(baked_project, "check-config", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert any(all(word in line for word in words) for line in output.splitlines()), output
    assert "Traceback" not in output


# --- make build ---------------------------------------------------------------------


def built_wheel(project: Path) -> zipfile.ZipFile:
    make(project, "build")
    wheels = list((project / "dist").glob("*.whl"))
    assert len(wheels) == 1, wheels
    return zipfile.ZipFile(wheels[0])


def test_make_build_makes_one_wheel_with_templates_and_static(baked_project):
    _, package, _ = names(baked_project)
    contents = built_wheel(baked_project).namelist()
    assert f"{package}/templates/index.html" in contents
    assert f"{package}/static/style.css" in contents


def test_make_build_drops_a_deleted_module(baked_project):
    """setuptools leaves build/lib behind; a module deleted from src/ must not ship."""
    _, package, _ = names(baked_project)
    module = baked_project / "src" / package / "deleted_later.py"
    module.write_text("X = 1\n")
    try:
        assert f"{package}/deleted_later.py" in built_wheel(baked_project).namelist()
    finally:
        module.unlink()
    assert f"{package}/deleted_later.py" not in built_wheel(baked_project).namelist()


# --- make pack ----------------------------------------------------------------------


@dataclass
class Release:
    tarball: Path
    root: Path  # the unpacked folder
    secret: str  # in config/local.ini while packing


@pytest.fixture(scope="module")
def release(baked_project, tmp_path_factory) -> Release:
    """`make clean pack` with a secret in config/local.ini, unpacked."""
    slug, _, version = names(baked_project)
    secret = f"local-secret-{uuid.uuid4().hex}"
    local = baked_project / "config" / "local.ini"
    local.write_text(f"[app]\nsecret_key = {secret}\n")
    try:
        make(baked_project, "clean")
        make(baked_project, "pack")
    finally:
        local.unlink()
    # packed for this machine: its Python and platform (the wheelhouse holds MarkupSafe's build)
    local = subprocess.run(["python3", "deploy/target.py", "local"], cwd=baked_project, check=True,
                           capture_output=True, text=True).stdout.strip()
    (target, path), = (line.split() for line in (baked_project / "build" / "packed.txt").read_text().splitlines())
    tarball = baked_project / path
    assert target == local and tarball.is_file()
    assert re.fullmatch(rf"{slug}-{version}-{local.split('-')[0]}-manylinux_2_\d+_{platform.machine()}\.tar\.gz",
                        tarball.name)
    unpacked = tmp_path_factory.mktemp("release")
    with tarfile.open(tarball) as tar:
        tar.extractall(unpacked, filter="data")
    return Release(tarball, unpacked / tarball.name.removesuffix(".tar.gz"), secret)


def test_tarball_unpacks_to_one_folder(release):
    top = release.root.name
    with tarfile.open(release.tarball) as tar:
        assert all(name == top or name.startswith(f"{top}/") for name in tar.getnames())
        # owner 0/0 whoever packs (the packing machine's uids mean nothing on a host), and only
        # files and folders: what the host's member check accepts
        members = tar.getmembers()
        assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "root", "root")}
        assert all(m.isfile() or m.isdir() for m in members)
    assert [p.name for p in release.root.parent.iterdir()] == [top]


def test_release_file_describes_the_build(release, baked_project):
    slug, _, version = names(baked_project)
    fields = dict(line.split("=", 1) for line in (release.root / "RELEASE").read_text().splitlines())
    assert set(fields) == {"name", "version", "commit", "built", "python", "target", "env"}
    assert (fields["name"], fields["version"], fields["python"], fields["env"]) == (slug, version, ">=3.10", "prod")
    assert release.root.name == f"{slug}-{version}-{fields['target']}"
    assert fields["commit"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", fields["built"])


def test_sha256sums_cover_and_match_every_file(release):
    listed = {}
    for line in (release.root / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    files = {str(p.relative_to(release.root)) for p in release.root.rglob("*") if p.is_file()}
    assert set(listed) == files - {"SHA256SUMS"}
    for name, digest in listed.items():
        assert hashlib.sha256((release.root / name).read_bytes()).hexdigest() == digest, name


def test_wheels_are_the_app_and_exactly_the_pinned_requirements(release, baked_project):
    _, package, version = names(baked_project)
    wheels = {wheel_id(p.name) for p in (release.root / "wheels").glob("*.whl")}
    tool = re.search(r"^HOST_INSTALLER := installer==(\S+)$", (baked_project / "Makefile").read_text(), re.M)
    assert tool, "the Makefile does not pin the installer the host installs wheels with"
    expected = pinned(baked_project / "requirements.txt") | {(package, version), ("installer", tool[1])}
    assert wheels == expected


def test_base_and_the_environments_config_and_the_deploy_files_ship_but_not_local_ini(release, baked_project):
    shipped = sorted(p.name for p in (release.root / "config").iterdir())
    assert shipped == ["base.ini", "prod.ini"]  # the deployed environment's, no other stage's
    for name in shipped:
        assert (release.root / "config" / name).read_bytes() == (baked_project / "config" / name).read_bytes()
    for name in ("remote.sh", "gunicorn.conf.py", "target.py"):
        assert (release.root / "deploy" / name).is_file()
    # remote.sh is the bundle: the bootstrap with the host program zipped after it
    assert zipfile.is_zipfile(release.root / "deploy" / "remote.sh")


def test_local_secret_is_in_no_file_of_the_release(release, baked_project):
    secret = release.secret.encode()
    assert not [name for name, data in every_file_content(release.tarball) if secret in data]
    (wheel,) = (baked_project / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as app_wheel:
        assert not [name for name in app_wheel.namelist() if secret in app_wheel.read(name)]


def test_offline_install_from_the_release_wheels(release, baked_project, tmp_path):
    """A fresh venv, no index, no pip: the release's wheels/ is enough, installed as the host
    installs them (pypa's installer from the release's wheel, every wheel of the lock)."""
    _, package, _ = names(baked_project)
    unpacked = tmp_path / "release"
    shutil.copytree(release.root, unpacked)
    home = tmp_path / "home"  # a fresh host's account: an empty store
    home.mkdir(mode=0o700)
    env = {**offline_env(), "HOME": str(home)}
    run = dict(check=True, env=env, cwd=tmp_path, capture_output=True, text=True)
    filled = install_as_the_host(unpacked, env)
    venv = unpacked / "venv"

    code = f"import {package}; from {package} import create_app; print({package}.__file__)"
    imported = subprocess.run([venv / "bin/python", "-c", code], **run).stdout
    assert imported.startswith(str(venv)), f"imported from outside the fresh venv: {imported}"
    checked = subprocess.run([venv / "bin" / package, "check-config", "--config-dir", unpacked / "config"], **run)
    assert checked.stdout.splitlines() == ["prod: ok"]  # the one environment the release is for
    listed = subprocess.run([venv / "bin/python", "-c", "import importlib.metadata as m\n"
                             "for d in m.distributions(): print(d.metadata['Name'], d.version)"], **run).stdout
    installed = {(normalise(n), v) for n, v in (line.split() for line in listed.splitlines())}
    shipped = {wheel_id(p.name) for p in (unpacked / "wheels").glob("*.whl") if not p.name.startswith("installer-")}
    assert installed == shipped and len(filled["installed"]) == len(shipped)
    # byte-compiled as pip does: a root-owned venv cannot be compiled later by the app
    site = next((venv / "lib").glob("python*/site-packages"))
    modules = [p for p in (site / package).rglob("*.py")]
    assert modules and all(Path(importlib.util.cache_from_source(str(p))).is_file() for p in modules)

    # another app of this account with the same wheels links its dependencies from the host's
    # store: all but the app's own wheel, which is new at every deploy
    store = home / ".cache" / "cookiecutter-flask-deploy" / "installed"
    wait_for(lambda: len(list(store.glob("v1/*/*/installed.txt"))) == len(shipped) - 1, 30,
             "every dependency of the first install in the store (its child adds them)")
    other = tmp_path / "other"
    shutil.copytree(release.root, other)
    again = install_as_the_host(other, env)
    assert again["stored"] == len(shipped) - 1 and [w.split("-")[0] for w in again["installed"]] == [package], again
    other_site = next((other / "venv" / "lib").glob("python*/site-packages"))
    module = next((other_site / "flask").rglob("*.py"))
    assert module.samefile(site / module.relative_to(other_site)) and module.stat().st_mode & 0o222 == 0
    assert Path(importlib.util.cache_from_source(str(module))).is_file()
    shutil.rmtree(store)  # a cache: the venvs keep their links
    assert subprocess.run([other / "venv/bin/python", "-c", code], **run).stdout.startswith(str(other / "venv"))


# --- make help and make variables ---------------------------------------------------


def test_make_help_lists_every_target(baked_project):
    listed = set(re.findall(r"^  ([a-z-]+) ", make(baked_project, "help").stdout, re.MULTILINE))
    required = REQUIRED_TARGETS | host_commands(baked_project)
    assert required <= listed, required - listed


# target, variables, the variable the error must name
BAD_VARIABLES = [
    ("status", {"REMOTE_HOST": ""}, "REMOTE_HOST"),
    ("deploy", {"REMOTE_HOST": ""}, "REMOTE_HOST"),
    ("status", {"REMOTE_HOST": "x", "PORT": "abc"}, "PORT"),
    ("status", {"REMOTE_HOST": "x", "PORT": "70000"}, "PORT"),
    ("copy", {"REMOTE_HOST": "x", "PORT": "abc"}, "PORT"),
    ("status", {"REMOTE_HOST": "x", "KEEP_RELEASES": "many"}, "KEEP_RELEASES"),
    ("status", {"REMOTE_HOST": "x", "SSH_PORT": "22x"}, "SSH_PORT"),
    ("status", {"REMOTE_HOST": "x", "REMOTE_DIR": "a b"}, "REMOTE_DIR"),
]


@pytest.mark.parametrize("target, variables, named", BAD_VARIABLES)
def test_bad_make_variables_stop_before_ssh(baked_project, target, variables, named):
    started = time.monotonic()
    result = make(baked_project, target, check=False, **variables)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert named in result.stderr, output
    assert "ssh:" not in output and elapsed < 5, (elapsed, output)


def test_a_broken_ini_is_named_before_any_ssh(baked_project):
    """Deploy settings come from the INI files: a broken one must not pass for a missing setting."""
    prod = baked_project / "config" / "prod.ini"
    original = prod.read_text()
    try:
        prod.write_text(original + "\n[server]\nport = abc\n")
        result = make(baked_project, "status", check=False, REMOTE_HOST="x")
    finally:
        prod.write_text(original)
    assert result.returncode != 0
    assert "config/prod.ini" in result.stderr and "not a valid INI file" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "ssh:" not in result.stdout + result.stderr
