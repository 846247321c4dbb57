"""The fast install of a release's venv, for remote.sh, when only the app's own wheel changed.

    new/venv/bin/python -S install.py OLD_VENV NEW_VENV APP_WHEEL

remote.sh calls it only when every dependency wheel is byte for byte (sha256) the one the
running release installed, for the same Python, and after it has put the old venv's
site-packages into the new venv as hard links to read-only files (or copies, where links
fail): no two releases share a file that can change. Then pip has nothing to decide: this
removes the old release of the app from the new venv (unlinks: the old release keeps its
files), unpacks the app's wheel (pure Python, ours), writes its console scripts, and gives
the new venv the old one's other scripts (gunicorn, flask, …) as new files with `#!`
pointing at the new venv's python. A few hundredths of a second, against about 2 s for pip.
Standard library only (run with -S).
"""
from __future__ import annotations

import configparser
import os
import shutil
import sys
import zipfile
from pathlib import Path


def site_packages(venv: Path) -> Path:
    (site,) = venv.glob("lib/python*/site-packages")
    return site


def main(old_venv: Path, new_venv: Path, app_wheel: Path) -> int:
    old_site, new_site = site_packages(old_venv), site_packages(new_venv)
    if old_site.parent.name != new_site.parent.name:
        print(f"install.py: {old_site.parent.name} is not {new_site.parent.name}", file=sys.stderr)
        return 2
    with zipfile.ZipFile(app_wheel) as wheel:
        names = wheel.namelist()
        app_entries = {name.split("/", 1)[0] for name in names}
        dist_info = next(entry for entry in app_entries if entry.endswith(".dist-info"))
        project = dist_info.rsplit("-", 1)[0]  # my_flask_app-0.1.0.dist-info -> my_flask_app
        for entry in new_site.iterdir():  # the old release of the app itself, copied with the rest
            if entry.name in app_entries or (entry.name.endswith(".dist-info") and entry.name.rsplit("-", 1)[0] == project):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
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


def write_script(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: install.py OLD_VENV NEW_VENV APP_WHEEL")
    sys.exit(main(*(Path(arg) for arg in sys.argv[1:])))
