"""What a release must hold, checked by `make pack` before anything reaches a host.

- The lock: requirements.txt pins every distribution the host installs. Each of the app's
  own requirements (setup.py's install_requires, read back from the built wheel) needs a
  pin inside its range, and the wheelhouse pip resolved from requirements.txt may hold
  nothing that requirements.txt does not pin (the host installs every pinned wheel and
  nothing else, without asking pip to resolve anything).
- The package's files: every file under src/<package>/ that git does not ignore is in the
  wheel (setup.py lists them; a setuptools setting could still drop one), and none is a
  symlink (the wheel would carry whatever it points to).

Each check returns sentences naming the package or file; pack.py prints them and stops.
"""
from __future__ import annotations

import re
import subprocess
import zipfile
from email.parser import Parser
from pathlib import Path


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them: Flask_Login == flask-login."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_pins(text: str, where: str = "requirements.txt") -> tuple[dict[str, str], list[str]]:
    """{canonical name: version} for each `name==version` line, and a sentence for each line
    that is not one (the lock holds exact versions only)."""
    pins, problems = {}, []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):  # pip options (--find-links …) are pip's business
            continue
        requirement = line.split(";", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([A-Za-z0-9.+!_-]+)", requirement)
        if not match:
            problems.append(f"{where} line {number}: {line!r} is not a pin (name==version): "
                            "the host installs exactly the versions listed there")
            continue
        pins[canonical(match[1])] = match[3]
    return pins, problems


def wheel_requirements(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA: setup.py's install_requires."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        metadata = Parser().parsestr(archive.read(name).decode())
    return metadata.get_all("Requires-Dist") or []


def lock_problems(requires: list[str], pins: dict[str, str], where: str = "requirements.txt") -> list[str]:
    """What is wrong with the pins for the app's own requirements: one with no pin, or a pin
    outside its range. Requirements of the app's optional extras are not installed: skipped."""
    from packaging.requirements import Requirement  # in the project's venv (requirements-dev.txt)

    problems = []
    for line in requires:
        requirement = Requirement(line)
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue
        name = canonical(requirement.name)
        if name not in pins:
            problems.append(f"{requirement.name} is required by setup.py ({line}) but not pinned in {where}: "
                            f"add {requirement.name}==<version>")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement.name}=={pins[name]} in {where} is outside setup.py's range "
                            f"({requirement.name}{requirement.specifier})")
    return problems


def unpinned_wheels(wheel_names: list[str], pins: dict[str, str], tools: set[str],
                    where: str = "requirements.txt") -> list[str]:
    """Wheels pip resolved that the lock does not pin (a dependency of a pinned package)."""
    problems = []
    for name in wheel_names:
        distribution, version = name.split("-")[:2]
        if canonical(distribution) in tools:  # the host's installer, not a dependency of the app
            continue
        if canonical(distribution) not in pins:
            problems.append(f"the wheelhouse needs {distribution} {version} (a dependency of a pinned package), "
                            f"which {where} does not pin: add {distribution}=={version}")
    return problems


def package_sources(root: Path) -> list[Path]:
    """Every path under root that git does not ignore (every path, outside git), less
    __pycache__/ and *.pyc: what the wheel must carry."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."],
                                cwd=root, capture_output=True, check=True).stdout.decode().split("\0")
        paths = [root / name for name in listed if name]
    except (OSError, subprocess.CalledProcessError):  # no git, or not a repository
        paths = list(root.rglob("*"))
    return sorted(path for path in paths if (path.is_symlink() or path.is_file())
                  and "__pycache__" not in path.relative_to(root).parts and path.suffix != ".pyc")


def source_problems(root: Path, package: str, wheel_names: list[str]) -> list[str]:
    """The package's files that are symlinks, and those the wheel lacks, each named."""
    problems, missing = [], []
    in_wheel = set(wheel_names)
    for path in package_sources(root):
        inner = path.relative_to(root).as_posix()
        if path.is_symlink():
            problems.append(f"{root / inner} is a symlink: a release carries files, not links "
                            "(copy the file in, or move what it points to into the package)")
        elif f"{package}/{inner}" not in in_wheel:
            missing.append(f"{root / inner}")
    if missing:
        problems.append(f"the wheel lacks {len(missing)} file(s) of {root}/, which the app would miss on a host: "
                        f"{', '.join(missing)} (is a setuptools setting, such as exclude_package_data or "
                        "MANIFEST.in, dropping them?)")
    return problems
