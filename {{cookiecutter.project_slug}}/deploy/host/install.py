"""install: verify an upload, unpack it as a release, build its venv offline."""
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
import zlib
from pathlib import Path

import host
from host import wheels
from host.context import Failure as Refusal
from host.releases import cacheable, plain_dir, read_release, remove

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
    and 3.11 patch releases, Debian 12's 3.11.2 among them, and allows links)."""
    name = member.name
    if name.startswith("/") or "//" in name or ".." in name.split("/"):
        return f"{name!r} is not a relative path inside the release"
    if not (member.isfile() or member.isdir()):
        return f"{name!r} is a link, a device or a fifo, not a file"
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
        if cacheable(name) and not (release / name).exists():
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


def install(app_dir: Path, upload: str, expected_sha256: str, python: str, host_name: str, env: str = "") -> str:
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
        packed_for = read_release(scratch / "RELEASE").get("env")
        if env and packed_for and packed_for != env:  # it carries only base.ini and its own env's
            raise Refusal(f"upload {upload} was packed for {packed_for}, not {env}: make pack APP_ENV={env} "
                          "packs one for it; nothing was installed")
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
        fill_and_verify(scratch, app_dir / "state" / "wheels")
    except Refusal:
        remove(scratch)
        raise
    release_id = new_release_id(releases, read_release(scratch / "RELEASE")["version"])
    release = releases / release_id
    (scratch / ".unfinished").touch()  # removed only when the venv is complete
    os.rename(scratch, release)
    how = build_venv(release, python, app_dir)
    cache_wheels(release, app_dir / "state" / "wheels")
    (release / ".unfinished").unlink()
    tarball.unlink(missing_ok=True)
    print(f"  installed release {release_id}{how}", flush=True)
    return release_id


def build_venv(release: Path, python: str, app_dir: Path) -> str:
    """The release's venv, offline: every wheel of the lock (nothing resolved here: the host
    runs what make test ran against) by host/wheels.py, in the new venv's own Python, with
    pypa's installer from the release's wheel; what the running release installed from the
    same wheels is linked from its venv (same Python only). Returns how, for the message."""
    venv = release / "venv"
    made = subprocess.run([python, "-S", "-m", "venv", "--without-pip", str(venv)], check=False)
    if made.returncode != 0:
        raise Refusal(f"cannot create a venv with {python} on the host")
    tool = sorted((release / "wheels").glob("installer-*.whl"))
    if len(tool) != 1:
        raise Refusal("the release has no installer wheel in wheels/ (make pack ships it); nothing was installed")
    current = app_dir / "current"
    previous = current.resolve() / "venv" if current.is_symlink() else None
    if previous is None or not venv_identity(previous) or venv_identity(previous) != venv_identity(venv):
        previous = None  # another Python: its files are not this venv's
    program = Path(host.__file__).resolve().parent.parent  # the bundle (a zip), or deploy/
    filled = subprocess.run([str(venv / "bin" / "python"), "-I", "-S", "-c", wheels.BOOT, str(tool[0]), str(program),
                             str(release), str(previous or "-")], capture_output=True, text=True, check=False)
    if filled.returncode != 0:
        said = [line for line in filled.stderr.splitlines() if line.strip()]
        if filled.returncode == 3 and said:
            raise Refusal(said[-1].removeprefix("error: "))
        raise Refusal(f"the offline install of {release.name} failed: {said[-1] if said else 'no output'}; "
                      "nothing was activated")
    done = json.loads(filled.stdout.strip().splitlines()[-1])
    linked = f"{done['linked']} linked from {previous.parent.name}, " if done["linked"] else ""
    linked += f"{done['stored']} linked from this host's store, " if done["stored"] else ""
    return (f" ({linked}{len(done['installed'])} installed, {done['compiled']} files compiled: "
            f"unpack {done['unpack_s']}s, compile {done['compile_s']}s)")


def cache_wheels(release: Path, wheels: Path) -> None:
    """Every wheel of the release joins the cache, named by its sha256 (the next upload leaves
    them out); never through a link someone planted."""
    if not plain_dir(wheels):
        return
    for name, digest in read_sums(release).items():
        if cacheable(name) and not (wheels / digest).exists():
            tmp = wheels / f".{digest}.tmp"
            shutil.copyfile(release / name, tmp)
            os.replace(tmp, wheels / digest)
