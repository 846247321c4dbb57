"""Assemble a release tarball: `make pack` runs this after building the wheel and wheelhouse.

build/<name>-<version>/ holds RELEASE, SHA256SUMS, wheels/, config/*.ini (never the
host-local file), the host-side deploy files and static/ (for nginx); it is packed as one .tar.gz.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
from datetime import datetime, timezone
from pathlib import Path

DEPLOY_FILES = ("remote.sh", "gunicorn.conf.py", "healthz.py")
NAME = "{{ cookiecutter.project_slug }}"
PACKAGE = "{{ cookiecutter.package_name }}"
PYTHON_REQUIRES = ">={{ cookiecutter.python_version }}"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "none"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def pack(dist: Path, wheelhouse: Path, out: Path) -> Path:
    wheels = sorted(dist.glob("*.whl"))
    if len(wheels) != 1:
        sys.exit(f"expected exactly one wheel in {dist}/, found {len(wheels)}: run make build")
    version = wheels[0].name.split("-")[1]
    root = out / f"{NAME}-{version}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "wheels").mkdir(parents=True)
    (root / "config").mkdir()
    (root / "deploy").mkdir()
    for wheel in [wheels[0], *sorted(wheelhouse.glob("*.whl"))]:
        shutil.copy2(wheel, root / "wheels")
    for ini in sorted(Path("config").glob("*.ini")):
        if ini.name != "local.ini":  # host-local secrets never ship
            shutil.copy2(ini, root / "config")
    for name in DEPLOY_FILES:
        shutil.copy2(Path("deploy") / name, root / "deploy")
    # static/: a plain copy of the package's static files, for nginx to serve (make nginx-conf).
    if (Path("src") / PACKAGE / "static").is_dir():
        shutil.copytree(Path("src") / PACKAGE / "static", root / "static")
    built = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    (root / "RELEASE").write_text(
        f"name={NAME}\nversion={version}\ncommit={git_commit()}\nbuilt={built}\npython={PYTHON_REQUIRES}\n"
    )
    files = sorted(p for p in root.rglob("*") if p.is_file())
    (root / "SHA256SUMS").write_text("".join(f"{sha256(p)}  {p.relative_to(root)}\n" for p in files))
    tarball = out / f"{root.name}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(root, arcname=root.name)
    return tarball


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dist", type=Path, required=True)
    parser.add_argument("--wheelhouse", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    tarball = pack(args.dist, args.wheelhouse, args.out)
    print(f"{tarball} ({tarball.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
