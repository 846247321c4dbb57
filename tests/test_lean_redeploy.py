"""A redeploy near its floor, checked for correctness (timing is bench/'s job): the upload
leaves out the wheels the host's cache holds, every distribution whose wheel is unchanged is
taken from the running release's venv (hard links to its read-only files) and only the new
and changed wheels are installed (pypa's installer, no pip), a removed one is gone, a
rollback runs the older release's own versions, a corrupt cache entry is caught by its
sha256 and sent again, and no two releases share a file that can change.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import tarfile
from importlib.util import cache_from_source
from pathlib import Path

import pytest
from harness.app import new_app


@pytest.fixture(scope="module")
def app(baked_project, sshd_host, tmp_path_factory, request):
    deployed = new_app(baked_project, sshd_host, tmp_path_factory, request)
    deployed.deploy()
    return deployed


def uploaded(app) -> tuple[int, list[str]]:
    """Size and wheels of what the last deploy sent (the lean tarball scp copied)."""
    lean = app.project / "build" / "hosts" / f"{app.host.host_alias}.upload.tar.gz"
    with tarfile.open(lean) as tar:
        wheels = sorted(Path(n).name for n in tar.getnames() if "/wheels/" in n)
    return lean.stat().st_size, wheels


def test_a_redeploy_with_unchanged_dependencies_sends_only_the_app_wheel(app):
    result = app.deploy()
    size, wheels = uploaded(app)
    assert wheels == [w for w in wheels if w.startswith("my_flask_app-")] and len(wheels) == 1, wheels
    assert size < 100 * 1024, size
    # every dependency came from the last release's venv; only the app's own wheel was installed
    assert re.search(r"\(\d+ linked from \S+, 1 installed, \d+ files compiled", result.stdout), result.stdout
    assert app.release() == app.current()
    # SHA256SUMS still covers every file of the release, and every file matches it
    release = app.dir / "releases" / app.current()
    listed = dict(reversed(line.split("  ", 1)) for line in (release / "SHA256SUMS").read_text().splitlines())
    files = {str(p.relative_to(release)) for p in release.rglob("*") if p.is_file()
             and not str(p.relative_to(release)).startswith("venv/") and p.name != "SHA256SUMS"
             and "__pycache__" not in p.parts}  # written by the running app, not shipped
    assert set(listed) == files
    for name, digest in listed.items():
        assert hashlib.sha256((release / name).read_bytes()).hexdigest() == digest, name
    # the venv works like pip's: the app's own console script, and the linked ones
    out = app.make("exec", CMD="my_flask_app check-config --env prod && gunicorn --version && head -n 1 \"$(command -v flask)\"").stdout
    assert "prod: ok" in out and "gunicorn (version" in out and f"#!{release}/venv/bin/python" in out


def test_no_two_releases_share_a_writable_file(app):
    app.deploy()  # at least two releases, the last made from the one before
    older, newer = sorted(p.name for p in (app.dir / "releases").iterdir())[-2:]
    shared = 0
    for path in (app.dir / "releases").rglob("*"):
        st = path.lstat()
        if path.is_symlink() or not path.is_file() or st.st_nlink == 1:
            continue
        shared += 1
        assert st.st_mode & 0o222 == 0, f"{path} is shared by {st.st_nlink} releases and writable ({oct(st.st_mode)})"
    assert shared > 100, "the dependencies were not linked"
    # each release still has its own complete venv: every file of the older one's dependencies
    sites = [next((app.dir / "releases" / r / "venv" / "lib").glob("python*/site-packages")) for r in (older, newer)]
    files = [{str(p.relative_to(site)) for p in site.rglob("*") if p.is_file() and not p.is_relative_to(site / "my_flask_app")
              and "my_flask_app-" not in str(p.relative_to(site))} for site in sites]
    assert files[0] and files[0] <= files[1], sorted(files[0] - files[1])[:5]
    # the app itself is the new release's own: new files, not links
    for path in (sites[1] / "my_flask_app").rglob("*.py"):
        assert path.stat().st_nlink == 1, path


def test_a_corrupt_cache_entry_is_caught_and_sent_again(app):
    cache = app.dir / "state" / "wheels"
    flask_wheel = next(p for p in (app.dir / "current" / "wheels").glob("flask-*.whl"))
    digest = hashlib.sha256(flask_wheel.read_bytes()).hexdigest()
    entry = cache / digest
    entry.write_bytes(entry.read_bytes()[:-100] + b"x" * 100)  # same size, other bytes
    result = app.deploy()
    assert re.search(r"cached copy of wheels/flask-\S+\.whl was corrupt \(sha256\): removed; sending the whole release",
                     result.stderr), result.stdout + result.stderr
    assert hashlib.sha256(entry.read_bytes()).hexdigest() == digest  # cached again, whole
    assert app.release() == app.current()


def test_a_second_app_on_the_host_links_its_first_deploy_from_the_hosts_store(app, sshd_host, tmp_path_factory, request):
    other = new_app(app.project, sshd_host, tmp_path_factory, request)
    result = other.deploy()
    release = other.dir / "releases" / other.current()
    dependencies = [w for w in (release / "wheels").glob("*.whl") if not w.name.startswith(("my_flask_app-", "installer-"))]
    took = re.search(r"installed release \S+ \((\d+) linked from this host's store, 1 installed, (\d+) files compiled", result.stdout)
    assert took and int(took[1]) == len(dependencies), result.stdout  # only the app's own wheel is installed
    # the same read-only files as the first app's, compiled once
    sites = [next((a.dir / "current" / "venv" / "lib").glob("python*/site-packages")) for a in (app, other)]
    for name in ("flask/app.py", "sqlalchemy/orm/session.py"):
        mine = sites[1] / name
        assert mine.samefile(sites[0] / name) and mine.stat().st_mode & 0o222 == 0, name
        assert Path(cache_from_source(str(mine))).is_file(), name
    assert "prod: ok" in other.make("exec", CMD="my_flask_app check-config --env prod").stdout


def in_venv(app, release: str, code: str) -> str:
    """What CODE prints in that release's own venv (the host is this machine)."""
    python = app.dir / "releases" / release / "venv" / "bin" / "python"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


VERSIONS = ("import importlib.util as u, importlib.metadata as m; print('click', m.version('click')); "
            "print('six', m.version('six') if u.find_spec('six') else None)")


def test_an_added_a_bumped_and_a_removed_dependency_and_a_rollback(app):
    requirements = app.project / "requirements.txt"
    saved = requirements.read_text()
    bumped = re.sub(r"^click==\S+$", "click==8.1.8", saved, flags=re.M)
    try:
        first = app.current()
        requirements.write_text(bumped + "six==1.17.0\n")  # one added, one changed
        result = app.deploy()
        _, wheels = uploaded(app)
        assert sorted(w.split("-")[0] for w in wheels) == ["click", "my_flask_app", "six"], wheels
        took = re.search(r"\(\d+ linked from \S+, (?:(\d+) linked from this host's store, )?(\d+) installed, ", result.stdout)
        assert took and int(took[1] or 0) + int(took[2]) == 3, result.stdout  # the store may hold the new ones
        second = app.current()
        assert in_venv(app, second, VERSIONS).split("\n") == ["click 8.1.8", "six 1.17.0"]
        site = next((app.dir / "releases" / second / "venv" / "lib").glob("python*/site-packages"))
        assert not list(site.glob("click-8.5*"))  # the old version is gone from the new venv
        # the previous release keeps its own: the old click, whole, and no six
        assert in_venv(app, first, VERSIONS).split("\n") == ["click 8.5.1", "six None"]

        requirements.write_text(bumped)  # six removed
        app.deploy()
        third = app.current()
        assert in_venv(app, third, VERSIONS).split("\n") == ["click 8.1.8", "six None"]
        site = next((app.dir / "releases" / third / "venv" / "lib").glob("python*/site-packages"))
        assert not [p.name for p in site.iterdir() if p.name.startswith("six")]

        rolled = app.make("rollback")
        assert f"rolling back from {third} to {second}" in rolled.stdout
        out = app.make("exec", CMD=f"python -c \"{VERSIONS}\"").stdout  # the running app's own venv
        assert out.strip().splitlines()[-2:] == ["click 8.1.8", "six 1.17.0"]
    finally:
        requirements.write_text(saved)
