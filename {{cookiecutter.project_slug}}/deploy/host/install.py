"""install: verify an upload, unpack it as a release, build its venv offline."""
import configparser
import hashlib
import os
import shutil
import subprocess
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

from host.context import Failure as Refusal
from host.releases import plain_dir, read_release, remove

LEAN_RETRY = 75  # the Makefile then uploads the whole release and tries again


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unsafe_member(member: tarfile.TarInfo) -> str | None:
    """Why a tarball member may not be unpacked, or None: only regular files and directories,
    by relative paths that stay inside (Python's own data filter is missing from some 3.10
    and 3.11 patch releases, and allows links)."""
    name = member.name
    if name.startswith("/") or "//" in name or ".." in name.split("/"):
        return f"{name!r} is not a relative path inside the release"
    if not (member.isfile() or member.isdir()):
        return f"{name!r} is a link or a device, not a file"
    return None


def unpack(tarball: Path, into: Path) -> None:
    """Every member of the release's one top folder into INTO, owned by whoever runs this
    (never the packing machine's uids), modes 0755 or 0644, after checking them all."""
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
        for member in members:
            if why := unsafe_member(member):
                raise Refusal(f"upload {tarball.name} holds {why}; nothing was installed")
        tops = {member.name.split("/", 1)[0] for member in members}
        if len(tops) != 1:
            raise Refusal(f"upload {tarball.name} is not one release folder; nothing was installed")
        into.mkdir(mode=0o755)
        for member in members:
            inner = member.name.partition("/")[2]
            if not inner:
                continue
            target = into / inner
            if member.isdir():
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
                continue
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            with tar.extractfile(member) as source, open(target, "xb") as out:
                shutil.copyfileobj(source, out)
            os.chmod(target, 0o755 if member.mode & 0o100 else 0o644)
            os.utime(target, (member.mtime, member.mtime))


def read_sums(release: Path) -> dict[str, str]:
    """SHA256SUMS: {relative path: sha256}."""
    sums = {}
    for line in (release / "SHA256SUMS").read_text().splitlines():
        digest, _, name = line.partition("  ")
        sums[name] = digest
    return sums


def dependency_sums(sums: dict[str, str], dist: str) -> list[str]:
    """The sha256 of every wheel but the app's own: equal lists mean unchanged dependencies."""
    app_prefix = "wheels/" + dist.replace("-", "_").replace(".", "_") + "-"
    return sorted(f"{digest} {name}" for name, digest in sums.items()
                  if name.startswith("wheels/") and not name.startswith(app_prefix))


def fits(release: Path, python: str, host_name: str) -> str:
    """The release's own target.py, run by the host's Python: its interpreter's path when this
    Python and platform take the release, else its refusal (on stderr) as a Refusal."""
    info = read_release(release / "RELEASE")
    command = [python, "-S", str(release / "deploy" / "target.py"), "fits", info.get("target") or "any",
               info.get("python", "").removeprefix(">=")]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError:
        raise Refusal(f"{host_name} has no working {python}; nothing was installed") from None
    if result.returncode == 0 and result.stdout.strip():
        return result.stdout.strip()
    if result.returncode == 2:
        raise Refusal(result.stderr.strip().removeprefix("error: "))
    raise Refusal(f"{host_name} cannot run this release's deploy/target.py with {python} "
                  f"({result.stderr.strip().splitlines()[-1:] or 'no output'}); nothing was installed")


def fill_and_verify(release: Path, wheels: Path) -> None:
    """A lean upload leaves out the wheels the host's cache holds: put them back from there,
    then check every file against SHA256SUMS. A gap, or a cached copy that fails its sha256
    (removed here), asks for the whole release (LEAN_RETRY)."""
    sums = read_sums(release)
    for name, digest in sums.items():
        if name.startswith("wheels/") and not (release / name).exists():
            cached = wheels / digest
            if not plain_dir(wheels) or not cached.is_file() or cached.is_symlink():
                raise Refusal(f"the upload left out {name}, and this host has no copy of it; "
                              "sending the whole release", LEAN_RETRY)
            shutil.copyfile(cached, release / name)
    bad = [name for name, digest in sums.items() if not (release / name).is_file() or sha256(release / name) != digest]
    corrupt = [name for name in bad if (wheels / sums[name]).is_file()]
    for name in corrupt:
        (wheels / sums[name]).unlink()
    if corrupt:
        raise Refusal(f"the host's cached copy of {' '.join(corrupt)} was corrupt (sha256): removed; "
                      "sending the whole release", LEAN_RETRY)
    if bad:
        raise Refusal(f"files of {release.name} do not match its SHA256SUMS ({', '.join(bad)}); nothing was installed")


def new_release_id(releases: Path, version: str) -> str:
    while True:
        release_id = f"{version}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        if not (releases / release_id).exists():
            return release_id
        time.sleep(1)


def venv_identity(venv: Path) -> list[str]:
    """The lines of pyvenv.cfg that say which Python a venv runs (home, version)."""
    try:
        lines = (venv / "pyvenv.cfg").read_text().splitlines()
    except OSError:
        return []
    return sorted(line for line in lines if line.startswith(("home", "version")))


def link_tree(old: Path, new: Path) -> None:
    """OLD's files into NEW as hard links, each made read-only first: no two releases share a
    file that can change (Python replaces a .pyc with a new file, never in place), and the
    dependencies are not written again on every deploy. Where links fail, copies."""
    new.mkdir(exist_ok=True)
    try:
        for root, dirs, files in os.walk(old):
            here = new / Path(root).relative_to(old)
            for name in dirs:
                source = Path(root) / name
                if source.is_symlink():
                    os.symlink(os.readlink(source), here / name)
                else:
                    (here / name).mkdir(exist_ok=True)
            dirs[:] = [name for name in dirs if not (Path(root) / name).is_symlink()]
            for name in files:
                source = Path(root) / name
                if source.is_symlink():
                    os.symlink(os.readlink(source), here / name)
                    continue
                mode = source.stat().st_mode
                if mode & 0o222:
                    os.chmod(source, mode & ~0o222)
                os.link(source, here / name)
    except OSError:
        shutil.rmtree(new)
        shutil.copytree(old, new, symlinks=True)


def install(app_dir: Path, upload: str, expected_sha256: str, dist: str, python: str, host_name: str) -> str:
    """Verify the upload in .incoming, unpack it into releases/<id> and build its venv
    offline; the release's id. A release that did not finish installing is marked
    .unfinished and never activated."""
    incoming, releases = app_dir / ".incoming", app_dir / "releases"
    tarball, scratch = incoming / upload, incoming / f"unpack.{os.getpid()}"
    if not tarball.is_file():
        raise Refusal(f"upload {upload} is not in {incoming}")
    if sha256(tarball) != expected_sha256:
        raise Refusal(f"upload {upload} is incomplete or corrupt (sha256 mismatch); nothing was installed")
    try:
        unpack(tarball, scratch)
        if not (scratch / "RELEASE").is_file():
            raise Refusal(f"upload {upload} has no RELEASE file; nothing was installed")
        python = fits(scratch, python, host_name)
    except Refusal:
        remove(scratch)
        tarball.unlink(missing_ok=True)
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        remove(scratch)
        tarball.unlink(missing_ok=True)
        raise Refusal(f"cannot unpack {upload}; nothing was installed") from None
    try:
        fill_and_verify(scratch, app_dir / "shared" / "wheels")
    except Refusal:
        remove(scratch)
        raise
    release_id = new_release_id(releases, read_release(scratch / "RELEASE")["version"])
    release = releases / release_id
    (scratch / ".unfinished").touch()  # removed only when the venv is complete
    os.rename(scratch, release)
    how = build_venv(release, python, app_dir, dist)
    cache_wheels(release, app_dir / "shared" / "wheels")
    (release / ".unfinished").unlink()
    tarball.unlink(missing_ok=True)
    print(f"  installed release {release_id}{how}", flush=True)
    return release_id


def build_venv(release: Path, python: str, app_dir: Path, dist: str) -> str:
    """The release's venv: with unchanged dependencies, the running release's site-packages
    linked in and the app's wheel swapped (no pip); else pip, offline, every wheel of the lock
    and the app's own with --no-deps (nothing resolved here: the host runs what make test
    ran against). Returns how, for the message."""
    venv = release / "venv"

    def make_venv() -> None:
        made = subprocess.run([python, "-S", "-m", "venv", "--without-pip", str(venv)], check=False)
        if made.returncode != 0:
            raise Refusal(f"cannot create a venv with {python} on the host")

    make_venv()
    current = app_dir / "current"
    previous = current.resolve() if current.is_symlink() else None
    sums = read_sums(release)
    if (previous and (previous / "SHA256SUMS").is_file() and venv_identity(previous / "venv")
            and venv_identity(previous / "venv") == venv_identity(venv)
            and dependency_sums(read_sums(previous), dist) == dependency_sums(sums, dist)):
        try:
            for old_site in (previous / "venv").glob("lib/python*/site-packages"):
                new_site = venv / "lib" / old_site.parent.name / "site-packages"
                shutil.rmtree(new_site)
                link_tree(old_site, new_site)
            app_wheel = next(release / name for name in sums
                             if name.startswith("wheels/" + dist.replace("-", "_").replace(".", "_") + "-"))
            if install_app(previous / "venv", venv, app_wheel) == 0:
                return f" (dependencies as in {previous.name}: linked, no pip)"
        except (OSError, StopIteration, ValueError):
            pass
        shutil.rmtree(venv)
        make_venv()
    pip = next((release / "wheels").glob("pip-*.whl"), None)
    if pip is None:
        raise Refusal("release has no pip wheel in wheels/; nothing was installed")
    wheels = sorted(str(w) for w in (release / "wheels").glob("*.whl") if not w.name.startswith("pip-"))
    installed = subprocess.run([str(venv / "bin" / "python"), str(pip / "pip"), "install", "--quiet",
                                "--disable-pip-version-check", "--no-index", "--no-deps", *wheels], check=False)
    if installed.returncode != 0:
        raise Refusal(f"offline install of {release.name} into {venv} failed")
    return ""


def cache_wheels(release: Path, wheels: Path) -> None:
    """Every wheel of the release joins the cache, named by its sha256 (the next upload leaves
    them out); never through a link someone planted."""
    if not plain_dir(wheels):
        return
    for name, digest in read_sums(release).items():
        if name.startswith("wheels/") and not (wheels / digest).exists():
            tmp = wheels / f".{digest}.tmp"
            shutil.copyfile(release / name, tmp)
            os.replace(tmp, wheels / digest)


# --- install: the fast venv when only the app's own wheel changed ---------------------------


def site_packages(venv: Path) -> Path:
    (site,) = venv.glob("lib/python*/site-packages")
    return site


def write_script(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


def install_app(old_venv: Path, new_venv: Path, app_wheel: Path) -> int:
    """build_venv calls it only when every dependency wheel is byte for byte (sha256) the one
    the running release installed, for the same Python, and after it has put the old venv's
    site-packages into the new venv as hard links to read-only files (or copies, where links
    fail): no two releases share a file that can change. This removes the old release of the
    app from the new venv (unlinks: the old release keeps its files), unpacks the app's wheel
    (pure Python, ours), writes its console scripts, and gives the new venv the old one's
    other scripts (gunicorn, flask, …) as new files with `#!` pointing at the new python."""
    old_site, new_site = site_packages(old_venv), site_packages(new_venv)
    if old_site.parent.name != new_site.parent.name:
        raise ValueError(f"{old_site.parent.name} is not {new_site.parent.name}")
    with zipfile.ZipFile(app_wheel) as wheel:
        names = wheel.namelist()
        app_entries = {name.split("/", 1)[0] for name in names}
        dist_info = next(entry for entry in app_entries if entry.endswith(".dist-info"))
        project = dist_info.rsplit("-", 1)[0]  # my_flask_app-0.1.0.dist-info -> my_flask_app
        for entry in new_site.iterdir():  # the old release of the app itself, copied with the rest
            if entry.name in app_entries or (entry.name.endswith(".dist-info") and entry.name.rsplit("-", 1)[0] == project):
                remove(entry)
        wheel.extractall(new_site)
        entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode() if f"{dist_info}/entry_points.txt" in names else ""

    old_python, new_python = str(old_venv / "bin" / "python"), str(new_venv / "bin" / "python")
    for script in (old_venv / "bin").iterdir():
        target = new_venv / "bin" / script.name
        if script.is_symlink() or not script.is_file() or target.exists():
            continue  # python itself, and venv's own activate scripts, are the new venv's
        data = script.read_bytes()
        first, _, rest = data.partition(b"\n")
        if first.startswith(b"#!") and first[2:].decode(errors="replace").strip() == old_python:
            write_script(target, f"#!{new_python}\n".encode() + rest)
    console = configparser.ConfigParser()
    console.read_string(entry_points)
    for name, spec in (console["console_scripts"].items() if console.has_section("console_scripts") else []):
        module, _, attr = spec.partition(":")
        write_script(new_venv / "bin" / name, (
            f"#!{new_python}\nimport sys\nfrom {module.strip()} import {attr.strip().split('.')[0]}\n"
            f"if __name__ == '__main__':\n    sys.exit({attr.strip()}())\n").encode())
    return 0
