"""Assemble release tarballs: `make pack` runs this after building the app's wheel.

For each target (deploy/target.py: a host's Python and platform) it resolves a wheelhouse
with `pip download` into one cache, build/wheels/ (a wheel is never downloaded twice, and
a target already resolved for this requirements.txt does not ask the index again), then
writes build/<name>-<version>-<needs>.tar.gz, where <needs> is what the wheels need of a
host: "any" when every wheel is pure Python, so such a project gets one release for every
target, and targets whose wheels are the same share one. Each tarball's folder holds
RELEASE, SHA256SUMS, wheels/, config/base.ini and the deployed environment's
config/<APP_ENV>.ini (no other stage's, never the host-local file), the host-side deploy
files and static/ (for nginx).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

from contents import canonical, lock_problems, requirement_pins, source_problems, unpinned_wheels, wheel_requirements
from target import Target, TargetError, local_facts, wheel_needs

DEPLOY_FILES = ("gunicorn.conf.py", "target.py", "maintenance.html")
BUNDLE = Path("build/remote.sh")  # deploy/bundle.py: the bootstrap with the host program
CACHE = Path("build/wheels")
LISTS = Path("build/wheelhouse")
EXTRA = Path("wheels-extra")  # wheels built by hand for a target PyPI has none for
PIP_SAID = re.compile(r"^\s*(?:Saved|File was already downloaded) (\S+\.whl)$", re.MULTILINE)
NAME = "{{ cookiecutter.project_slug }}"
PACKAGE = "{{ cookiecutter.package_name }}"
PYTHON_REQUIRES = ">={{ cookiecutter.python_version }}"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=False).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "none"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


class PackError(Exception):
    """One sentence for the user (or one per problem): no traceback."""


def refuse(problems: list[str]) -> None:
    if problems:
        raise PackError("\n  ".join(["the release would not be what make test ran against:", *problems]))


def requirements_key(requirements: Path, host_installer: str) -> str:
    """What a wheelhouse depends on: the pins, the host's installer, the hand-built wheels."""
    extra = sorted(p.name for p in EXTRA.glob("*.whl")) if EXTRA.is_dir() else []
    return hashlib.sha256("\n".join([requirements.read_text(), host_installer, *extra]).encode()).hexdigest()[:16]


def wheelhouse(target: Target, requirements: Path, host_installer: str) -> tuple[list[str], int]:
    """The wheel file names (in CACHE) for target, and how many were downloaded just now."""
    key = requirements_key(requirements, host_installer)
    listing = LISTS / f"{target}.txt"
    if listing.exists():
        header, *names = listing.read_text().split()
        if header == key and all((CACHE / n).exists() for n in names):
            return names, 0
    CACHE.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(CACHE))
    links = ["--find-links", str(EXTRA)] if EXTRA.is_dir() else []
    # Into the cache itself: pip skips a file that is already there ("already downloaded").
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
                             "--progress-bar", "off", "-d", str(CACHE), *links, *target.pip_args(),
                             "-r", str(requirements), host_installer], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PackError(pip_failure(result.stderr, target))
    names = sorted({Path(n).name for n in PIP_SAID.findall(result.stdout)})
    LISTS.mkdir(parents=True, exist_ok=True)
    listing.write_text("\n".join([key, *names]) + "\n")
    return names, len(set(names) - before)


def pip_failure(stderr: str, target: Target) -> str:
    missing = re.search(r"No matching distribution found for ([A-Za-z0-9._-]+)(?:==(\S+))?", stderr)
    if missing:
        name, version = missing[1], missing[2] or "(any version)"
        return (f"no wheel of {name} {version} for {target} ({target.describe()}): PyPI has only its "
                f"source, or no build for that Python or platform. Pin a version of {name} that has "
                f"wheels for it, or build the wheel on such a machine (pip wheel {name}=={version}) "
                f"and put it in {EXTRA}/")
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
    return f"pip could not download the wheels for {target}: " + (errors[-1] if errors else stderr.strip()[-300:])


def configs(env: str) -> list[Path]:
    """What a release for ENV carries of config/: base.ini and ENV's own file, nothing else
    (another stage's settings are not this host's business), never a link."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", env):
        raise PackError(f"APP_ENV={env!r} is not an environment name (lower-case letters, digits and -)")
    wanted = [Path("config") / "base.ini", Path("config") / f"{env}.ini"]
    for ini in wanted:
        if ini.is_symlink():  # it would ship whatever it points to, on this machine
            raise PackError(f"{ini} is a symlink: a release carries files, not links; put the file itself there")
        if not ini.is_file():
            known = sorted(p.stem for p in Path("config").glob("*.ini") if p.stem not in ("base", "local"))
            raise PackError(f"there is no {ini}: APP_ENV={env} is not an environment here (the environments: "
                            f"{', '.join(known)})")
    return wanted


def pack(app_wheel: Path, wheels: list[Path], needs: str, out: Path, env: str) -> Path:
    version = app_wheel.name.split("-")[1]
    root = out / f"{NAME}-{version}-{needs}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "wheels").mkdir(parents=True)
    (root / "config").mkdir()
    (root / "deploy").mkdir()
    for wheel in [app_wheel, *wheels]:
        shutil.copy2(wheel, root / "wheels")
    for ini in configs(env):
        shutil.copy2(ini, root / "config")
    for name in DEPLOY_FILES:
        shutil.copy2(Path("deploy") / name, root / "deploy")
    if not BUNDLE.is_file():
        raise PackError(f"{BUNDLE} is missing: make pack writes it (deploy/bundle.py)")
    shutil.copy2(BUNDLE, root / "deploy" / "remote.sh")
    # static/: a plain copy of the package's static files, for nginx to serve (make nginx-conf).
    if (Path("src") / PACKAGE / "static").is_dir():
        shutil.copytree(Path("src") / PACKAGE / "static", root / "static")
    built = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (root / "RELEASE").write_text(f"name={NAME}\nversion={version}\ncommit={git_commit()}\nbuilt={built}\n"
                                  f"python={PYTHON_REQUIRES}\ntarget={needs}\nenv={env}\n")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    (root / "SHA256SUMS").write_text("".join(f"{sha256(p)}  {p.relative_to(root)}\n" for p in files))
    tarball = out / f"{root.name}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(root, arcname=root.name, filter=owned_by_root)
    return tarball


def owned_by_root(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Owner 0/0 in the tarball, whoever packs: the packing machine's uids mean nothing on a
    host (the host unpacks without owners anyway)."""
    member.uid = member.gid = 0
    member.uname = member.gname = "root"
    return member


def pack_for(targets: list[Target], dist: Path, out: Path, requirements: Path, host_installer: str,
             env: str = "prod") -> list[tuple[Target, Path]]:
    """One tarball per distinct set of wheels; returns (target, tarball) for every target."""
    app_wheels = sorted(dist.glob("*.whl"))
    if len(app_wheels) != 1:
        raise PackError(f"expected exactly one wheel in {dist}/, found {len(app_wheels)}: run make build")
    pins, problems = requirement_pins(requirements.read_text(), str(requirements))
    problems += lock_problems(wheel_requirements(app_wheels[0]), pins, str(requirements))
    with zipfile.ZipFile(app_wheels[0]) as wheel:
        problems += source_problems(Path("src") / PACKAGE, PACKAGE, wheel.namelist())
    refuse(problems)
    configs(env)  # before any download
    tools = {canonical(host_installer.split("==")[0])}
    packed: dict[tuple[str, ...], Path] = {}
    needs_seen: dict[str, tuple[str, ...]] = {}
    result = []
    for target in targets:
        names, downloaded = wheelhouse(target, requirements, host_installer)
        refuse(unpinned_wheels(names, pins, tools, str(requirements)))
        needs = wheel_needs(names, target)
        if needs_seen.setdefault(needs, tuple(names)) != tuple(names):
            needs = str(target)  # pure wheels that differ by Python (markers): one release each
        if tuple(names) not in packed:
            packed[tuple(names)] = pack(app_wheels[0], [CACHE / n for n in names], needs, out, env)
        tarball = packed[tuple(names)]
        print(f"{target}: {len(names)} wheels ({downloaded} downloaded), "
              f"{tarball} ({tarball.stat().st_size // 1024} KiB)")
        result.append((target, tarball))
    return result


def cacheable(name: str) -> bool:
    """What a host keeps by sha256 and an upload may leave out: as host/releases.py cacheable."""
    return name.startswith("wheels/") or name == "deploy/remote.sh"


def lean(tarball: Path, facts: Path, out: Path) -> str:
    """The release minus the wheels a host's cache holds (its probe lists their sha256):
    what `make deploy` uploads. SHA256SUMS still names every file; the host fills the gaps
    from its cache and checks them all."""
    said = json.loads(facts.read_text())  # the host's probe, as the deploy program kept it
    cached = set(said.get("cached", []))
    left_out = sent_wheels = 0
    with tarfile.open(tarball) as full:
        members = full.getmembers()
        sums_member = next(m for m in members if m.name.endswith("/SHA256SUMS"))
        sums = {}
        for line in full.extractfile(sums_member).read().decode().splitlines():
            digest, name = line.split("  ", 1)
            sums[name] = digest
        top = sums_member.name.split("/", 1)[0]
        tmp = out.with_name(out.name + ".tmp")
        with tarfile.open(tmp, "w:gz", compresslevel=6) as thin:
            for member in members:
                inner = member.name.removeprefix(top + "/")
                if member.isfile() and cacheable(inner) and sums.get(inner) in cached:
                    left_out += 1
                    continue
                if member.isfile() and inner.startswith("wheels/"):
                    sent_wheels += member.size
                thin.addfile(member, full.extractfile(member) if member.isfile() else None)
    os.replace(tmp, out)
    free = said.get("disk_free_kb")
    need = room_needed(members, out.stat().st_size, sent_wheels)
    if isinstance(free, int) and free * 1024 < need:
        out.unlink()
        raise PackError(f"the host has {int(free) // 1024} MiB free where the app lives; this release needs about "
                        f"{need // 2**20 + 1} MiB there (its upload, files and venv): nothing was sent. "
                        "Free some space there (make check-host shows the disk)")
    return f"upload {out.stat().st_size // 1024} KiB ({left_out} files the host has left out)"


def room_needed(members: list[tarfile.TarInfo], upload: int, sent_wheels: int) -> int:
    """Bytes a release takes on the host while it installs, roughly: the upload, its files,
    and a venv of three times the wheels the host did not have (an installed wheel is larger
    than the wheel; those it has were installed before, and are linked from there)."""
    files = sum(member.size for member in members if member.isfile())
    return upload + files + 3 * sent_wheels


def main() -> int:
    if sys.argv[1:2] == ["lean"]:  # pack.py lean TARBALL HOST_FACTS OUT
        if len(sys.argv) != 5:
            sys.exit("usage: pack.py lean TARBALL HOST_FACTS OUT")
        try:
            print(lean(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])))
        except PackError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dist", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--requirements", type=Path, default=Path("requirements.txt"))
    parser.add_argument("--host-installer", required=True, help="the installer the host installs wheels with, e.g. installer==1.1.0")
    parser.add_argument("--targets", default="", help="targets, spaced (default: this machine's)")
    parser.add_argument("--record", type=Path, help="write `target tarball` lines here")
    parser.add_argument("--env", default=os.environ.get("APP_ENV") or "prod",
                        help="the environment the release is for (default: APP_ENV, as make hands it over, else prod)")
    args = parser.parse_args()
    try:
        targets = [Target.parse(t) for t in args.targets.split()] or \
            [Target.from_facts(local_facts(), where="this machine")]
        packed = pack_for(targets, args.dist, args.out, args.requirements, args.host_installer, args.env)
    except (PackError, TargetError) as exc:
        print(f"error: make pack: {exc}", file=sys.stderr)
        return 2
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text("".join(f"{target} {tarball}\n" for target, tarball in packed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
