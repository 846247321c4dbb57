"""What a release is built for: a host's Python and platform, as one short string.

A target is spelled `<python tag>-<platform tag>`, the way wheel file names spell them:

    cp312-manylinux_2_36_x86_64     CPython 3.12, glibc 2.36, x86_64
    cp311-musllinux_1_2_aarch64     CPython 3.11, musl 1.2, arm64
    any                             (a release only) every wheel is pure Python

`make pack PACK_TARGET=cp312-manylinux_2_36_x86_64` names one; `make deploy` asks the
host (remote.sh probe prints its facts, as JSON) and `Target.from_facts` turns them into one.
Standard library only: it runs with the python3 that runs make.
"""
from __future__ import annotations

import glob
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "i386": "i686"}
SPELLING = re.compile(r"(?P<impl>cp|pp)(?P<major>3)(?P<minor>\d+)-(?P<libc>manylinux|musllinux)_"
                      r"(?P<lmajor>\d+)_(?P<lminor>\d+)_(?P<arch>[a-z0-9_]+)")
EXAMPLE = "cp312-manylinux_2_36_x86_64"
# Legacy manylinux names, by the glibc they stand for (PEP 600), and the arches they cover.
LEGACY = {(2, 17): ("manylinux2014", {"x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "s390x"}),
          (2, 12): ("manylinux2010", {"x86_64", "i686"}),
          (2, 5): ("manylinux1", {"x86_64", "i686"})}


class TargetError(ValueError):
    """A target that cannot be spelled, or a host we cannot build for; str() is one sentence."""


@dataclass(frozen=True)
class Target:
    implementation: str  # "cp" (CPython) or "pp" (PyPy)
    python: tuple[int, int]
    libc: str  # "manylinux" (glibc) or "musllinux" (musl)
    libc_version: tuple[int, int]
    arch: str

    @classmethod
    def parse(cls, text: str) -> Target:
        m = SPELLING.fullmatch(text.strip())
        if not m:
            raise TargetError(f"{text!r} is not a target: spell it like {EXAMPLE} or cp311-musllinux_1_2_aarch64")
        return cls(m["impl"], (3, int(m["minor"])), m["libc"], (int(m["lmajor"]), int(m["lminor"])), m["arch"])

    @classmethod
    def from_facts(cls, facts: dict[str, str], where: str = "the host") -> Target:
        """From remote.sh probe's lines (python_version, implementation, machine, libc)."""
        impl = {"cpython": "cp", "pypy": "pp"}.get(facts.get("implementation", "").lower())
        if impl is None:
            raise TargetError(f"{where} runs Python implementation {facts.get('implementation')!r}: "
                              "only CPython and PyPy are supported")
        version = tuple(int(n) for n in facts.get("python_version", "0.0").split(".")[:2])
        machine = facts.get("machine", "").lower()
        arch = ARCH_ALIASES.get(machine, machine)
        if not re.fullmatch(r"[a-z0-9_]+", arch):
            raise TargetError(f"{where} reports machine {machine!r}: not an architecture we know")
        libc, _, libc_version = facts.get("libc", "").partition(" ")
        family = {"glibc": "manylinux", "musl": "musllinux"}.get(libc)
        if family is None or not re.fullmatch(r"\d+\.\d+(\.\d+)*", libc_version):
            raise TargetError(f"{where} has neither glibc nor musl (libc={facts.get('libc')!r}): "
                              "releases are built for Linux with glibc or musl")
        lmajor, lminor = (int(n) for n in libc_version.split(".")[:2])
        return cls(impl, (version[0], version[1]), family, (lmajor, lminor), arch)

    def __str__(self) -> str:
        return (f"{self.implementation}{self.python[0]}{self.python[1]}-"
                f"{self.libc}_{self.libc_version[0]}_{self.libc_version[1]}_{self.arch}")

    @property
    def python_tag(self) -> str:
        return f"{self.implementation}{self.python[0]}{self.python[1]}"

    def describe(self) -> str:
        impl = {"cp": "CPython", "pp": "PyPy"}[self.implementation]
        libc = {"manylinux": "glibc", "musllinux": "musl"}[self.libc]
        return (f"{impl} {self.python[0]}.{self.python[1]} on {self.arch} "
                f"with {libc} {self.libc_version[0]}.{self.libc_version[1]}")

    def platforms(self) -> list[str]:
        """Every platform tag this host accepts, best first (what pip itself would try)."""
        major, newest = self.libc_version
        if self.libc == "musllinux":
            return [f"musllinux_{major}_{minor}_{self.arch}" for minor in range(newest, -1, -1)]
        # glibc 2.5 is the oldest manylinux for x86 (manylinux1), 2.17 for every other arch.
        oldest = 5 if self.arch in ("x86_64", "i686") else 17
        tags = []
        for minor in range(newest, oldest - 1, -1):
            tags.append(f"manylinux_{major}_{minor}_{self.arch}")
            legacy, arches = LEGACY.get((major, minor), ("", set()))
            if self.arch in arches:
                tags.append(f"{legacy}_{self.arch}")
        return tags

    def abis(self) -> list[str]:
        if self.implementation == "pp":
            return [f"pypy{self.python[0]}{self.python[1]}_pp73", "none"]
        return [self.python_tag, "abi3", "none"]

    def pip_args(self) -> list[str]:
        """`pip download` options for wheels that install on this target."""
        args = ["--only-binary=:all:", "--implementation", self.implementation,
                "--python-version", f"{self.python[0]}.{self.python[1]}"]
        for tag in self.platforms():
            args += ["--platform", tag]
        for abi in self.abis():
            args += ["--abi", abi]
        return args

    def accepts(self, needs: Target) -> bool:
        """Does a host of this target install a release whose wheels need `needs`?"""
        return (self.implementation, self.python, self.libc, self.arch) == \
            (needs.implementation, needs.python, needs.libc, needs.arch) and self.libc_version >= needs.libc_version


def local_facts() -> dict[str, str]:
    """The same facts remote.sh probe prints, for the machine running this script."""
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        libc = ""
    for loader in [] if libc else glob.glob("/lib/ld-musl-*.so.1"):  # musl: its loader says
        said = subprocess.run([loader], capture_output=True, text=True, check=False).stderr
        if m := re.search(r"^Version (\S+)", said, re.MULTILINE):
            libc = f"musl {m[1]}"
    return {"python_version": platform.python_version(), "implementation": sys.implementation.name,
            "machine": platform.machine(), "libc": libc}


def wheel_needs(wheel_names: list[str], target: Target) -> str:
    """What a set of wheels needs of a host: "any" when all are pure Python, else a target
    string with the newest libc any of them needs (a host with that or newer takes them all)."""
    newest = None
    for name in wheel_names:
        abi, plat = Path(name).stem.split("-")[-2:]
        if plat == "any" and abi == "none":
            continue
        needs = (0, 0)
        if plat != "any":
            versions = []
            for tag in plat.split("."):  # compressed tag sets: the least any of them needs
                m = re.match(r"(?:many|musl)linux_(\d+)_(\d+)_", tag)
                legacy = next((v for v, (n, _) in LEGACY.items() if tag.startswith(n + "_")), None)
                versions.append((int(m[1]), int(m[2])) if m else legacy or target.libc_version)
            needs = min(versions)
        newest = needs if newest is None else max(newest, needs)
    if newest is None:
        return "any"
    return str(Target(target.implementation, target.python, target.libc, newest, target.arch))


def host_target(facts: dict, host: str, minimum_text: str) -> str:
    """Before any upload: the host's target, from its probe's facts; or TargetError, one
    sentence saying why it cannot take a release."""
    python, minimum = facts.get("python", "python3"), tuple(int(n) for n in minimum_text.split("."))
    how = "name another with HOST_PYTHON=/path/to/python3 or [deploy] python; nothing was uploaded"
    if facts.get("python_version", "none") == "none":
        raise TargetError(f"{host} has no {python}: install Python {minimum_text} or newer there, or {how}")
    if tuple(int(n) for n in facts["python_version"].split(".")[:2]) < minimum:
        raise TargetError(f"{host} runs Python {facts['python_version']} ({python}), older than this project's "
                          f"minimum {minimum_text}: install a newer Python there, or {how}")
    if facts.get("venv", "ok") != "ok":
        raise TargetError(f"on {host}, `{python} -m venv` does not work ({facts['venv']}): install the venv module "
                          "there (Debian, Ubuntu: apt-get install python3-venv), or " + how)
    try:
        return str(Target.from_facts(facts, where=host))
    except TargetError as exc:
        raise TargetError(f"{exc}; nothing was uploaded") from None


def check_fits(needs: str, minimum_text: str = "") -> int:
    """On the host, on the unpacked release: does this Python take a release that needs
    Python >= minimum_text and was built for `needs`? If so, print the interpreter's own
    path (the host program then runs that, not a shim in front of it)."""
    host = os.environ.get("REMOTE_HOST") or platform.node() or "this host"
    have = "{}.{}".format(*sys.version_info[:2])
    if minimum_text and sys.version_info[:2] < tuple(int(n) for n in minimum_text.split(".")[:2]):
        return refuse(f"{host} runs Python {have} ({sys.executable}), older than this release needs "
                      f"(>={minimum_text}); nothing was installed")
    try:
        here = Target.from_facts(local_facts(), where=host)
        if needs == "any" or here.accepts(Target.parse(needs)):
            print(sys.executable)
            return 0
    except TargetError as exc:
        return refuse(f"{exc}; nothing was installed")
    return refuse(f"{host} runs {here.describe()} ({sys.executable}, {here}), but this release was built for {needs}: "
                  f"run make deploy (it packs for the host it deploys to) or make pack PACK_TARGET={here}; "
                  "nothing was installed")


def refuse(sentence: str) -> int:
    print(f"error: {sentence}", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    if len(argv) in (2, 3) and argv[0] == "fits":
        return check_fits(*argv[1:])
    if argv == ["local"]:
        print(Target.from_facts(local_facts(), where="this machine"))
        return 0
    print("usage: target.py fits TARGET [MIN_PYTHON] | local", file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
