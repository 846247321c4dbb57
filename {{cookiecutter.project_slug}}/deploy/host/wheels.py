"""Fill a release's new venv with its wheels: run by that venv's own Python (so that sysconfig
names its paths), with pypa's `installer` from the release's own wheel on sys.path (a wheel
is a zip), never pip. install.py starts it as

    venv/bin/python -I -S -c BOOT INSTALLER_WHEEL HOST_PROGRAM RELEASE PREVIOUS_VENV|-

Every distribution whose wheel is byte for byte (sha256) one the running release installed
is taken from that release's venv, file by file as its RECORD lists them: hard links to
files made read-only first (no two releases share a file that can change: Python replaces a
.pyc with a new file, never in place), scripts written anew for this venv's python. Only the
new and changed wheels are installed, and what the new release no longer has is not there.
Next comes the host's store (host/store.py): what this account installed already, for any
app with this Python, is linked from there the same way. What it installed is byte-compiled,
as pip does (a root-owned venv cannot be compiled later by the app), on every CPU, while the
rest unpacks. Prints one line of JSON, then adds what it installed to the store in a child
of its own; a wheel that cannot be installed is one sentence on stderr, exit 3.
"""
import base64
import contextlib
import csv
import hashlib
import io
import json
import os
import py_compile
import shutil
import sys
import sysconfig
import time
from importlib.util import cache_from_source
from pathlib import Path

import host
from host.store import Store

MAP = "installed-wheels.txt"  # in each venv: `sha256 wheel dist-info` for every wheel in it
INSTALLER_TAG = b"cookiecutter-flask-deploy (installer)\n"
# The command install.py runs: installer and the host program first on sys.path.
BOOT = ("import sys; sys.path[:0] = sys.argv[1:3]; del sys.argv[1:3]; "
        "from host import wheels; sys.exit(wheels.main(sys.argv[1:]))")


class WheelError(Exception):
    """One sentence naming the wheel: the deploy stops before the switch."""


def scheme(venv: Path, dist: str) -> dict[str, str]:
    """Where each part of a wheel goes in VENV (Python's own venv scheme, 3.11+; posix_prefix,
    which is what venvs get, on 3.10)."""
    name = "venv" if "venv" in sysconfig.get_scheme_names() else "posix_prefix"
    base = {"base": str(venv), "platbase": str(venv), "installed_base": str(venv), "installed_platbase": str(venv)}
    paths = sysconfig.get_paths(scheme=name, vars=base, expand=True)
    return {"purelib": paths["purelib"], "platlib": paths["platlib"], "scripts": paths["scripts"],
            "data": paths["data"], "headers": os.path.join(paths["include"], "site", dist)}


def read_map(venv: Path) -> dict[str, tuple[str, str]]:
    """{sha256: (wheel, dist-info)} of what VENV holds; empty when it was made some other way."""
    try:
        lines = (venv / MAP).read_text().splitlines()
        return {digest: (wheel, dist_info) for digest, wheel, dist_info in (line.split(" ") for line in lines)}
    except (OSError, ValueError):
        return {}


def release_wheels(release: Path) -> list[tuple[str, str]]:
    """(wheel file name, sha256) of every wheel of the release but installer's own."""
    wheels = []
    for line in (release / "SHA256SUMS").read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name.startswith("wheels/") and name.endswith(".whl") and not name.startswith("wheels/installer-"):
            wheels.append((name.removeprefix("wheels/"), digest))
    return sorted(wheels)


def readonly_link(source: Path, target: Path) -> None:
    """TARGET as a hard link to SOURCE, made read-only first; a copy where links fail (another
    file system, a link count limit), never over a file already there."""
    mode = source.stat().st_mode
    if mode & 0o222:
        os.chmod(source, mode & ~0o222)
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:
        write_new(target, source.read_bytes(), mode & 0o555)


def retarget_script(data: bytes, old_python: str, new_python: str) -> bytes | None:
    """A script with the old venv's python in its `#!` header (installer writes `#!python`,
    or for a long path `#!/bin/sh` and `'''exec' python`), pointed at the new one; None for a
    file that names no interpreter of the old venv (linked as it is)."""
    head, newline, rest = data.partition(b"\n")
    old, new = old_python.encode(), new_python.encode()
    if head == b"#!" + old:
        return b"#!" + new + newline + rest
    second, newline2, rest2 = rest.partition(b"\n")
    if head == b"#!/bin/sh" and second.startswith(b"'''exec' " + old + b" "):
        return head + newline + second.replace(old, new, 1) + newline2 + rest2
    return None


def make_dirs(path: Path, made: set[Path]) -> None:
    """PATH and its parents, each asked of the file system once per install (MADE)."""
    if path not in made:
        path.mkdir(parents=True, exist_ok=True)
        made.add(path)


def link_distribution(old: dict[str, str], new: dict[str, str], dist_info: str, made: set[Path] | None = None) -> int:
    """Put one distribution of the old venv into the new one, as its RECORD lists its files
    (and their .pyc); its RECORD rewritten where a script changed. Returns files placed; on
    an error, removes those it placed (then it is installed afresh). Never writes into an
    existing file: that could be a link to the old release's. MADE: the folders made so far."""
    made = set() if made is None else made
    old_site, new_site = Path(old["purelib"]), Path(new["purelib"])
    old_root, new_root = Path(old["data"]), Path(new["data"])
    old_python, new_python = str(Path(old["scripts"]) / "python"), str(Path(new["scripts"]) / "python")
    placed: list[Path] = []
    try:
        rows = list(csv.reader(io.StringIO((old_site / dist_info / "RECORD").read_text())))
        for row in rows:
            source = Path(os.path.normpath(old_site / row[0]))
            if row[0] == f"{dist_info}/RECORD":
                continue
            if not source.is_relative_to(old_root):
                raise OSError(f"{row[0]} of {dist_info} is outside its venv")
            target = new_root / source.relative_to(old_root)
            make_dirs(target.parent, made)
            data = source.read_bytes() if source.parent == Path(old["scripts"]) else None
            script = data is not None and retarget_script(data, old_python, new_python)
            if script:
                write_new(target, script, 0o755)
                row[1:] = ["sha256=" + urlsafe_digest(script), str(len(script))]
            else:
                readonly_link(source, target)
            placed.append(target)
            if source.suffix == ".py" and os.path.exists(pyc := cache_from_source(str(source))):
                target_pyc = Path(cache_from_source(str(target)))
                make_dirs(target_pyc.parent, made)
                readonly_link(Path(pyc), target_pyc)
                placed.append(target_pyc)
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        write_new(new_site / dist_info / "RECORD", out.getvalue().encode(), 0o644)
    except (OSError, ValueError, IndexError, csv.Error):
        for path in placed:
            path.unlink(missing_ok=True)
        raise
    return len(placed)


def write_new(path: Path, data: bytes, mode: int) -> None:
    """A file that must not exist yet (O_EXCL: never through a link or into another's file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with open(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def urlsafe_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def install_wheel(path: Path, venv: Path, compiled: list[str]) -> str:
    """One wheel into VENV with installer (RECORD, console scripts, data files); its
    dist-info's name. Every .py it wrote joins COMPILED."""
    import zipfile

    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.exceptions import InstallerError
    from installer.records import InvalidRecordEntry
    from installer.sources import WheelFile

    written: list[tuple[str, str]] = []  # (scheme's folder, path in it) of every .py

    class Destination(SchemeDictionaryDestination):
        def write_to_fs(self, scheme_name, path, stream, is_executable):
            record = super().write_to_fs(scheme_name, path, stream, is_executable)
            if scheme_name in ("purelib", "platlib") and path.endswith(".py"):
                written.append((self.scheme_dict[scheme_name], path))
            return record

    try:
        with WheelFile.open(path) as source:
            source.validate_record(validate_contents=False)
            destination = Destination(scheme(venv, source.distribution), interpreter=str(venv / "bin" / "python"),
                                      script_kind="posix")
            install(source, destination, {"INSTALLER": INSTALLER_TAG})
            dist_info = source.dist_info_dir
    except (InstallerError, InvalidRecordEntry, zipfile.BadZipFile, OSError, ValueError, KeyError,
            AssertionError) as exc:  # installer's own, a bad zip or RECORD, a file two wheels both hold
        said = [] if isinstance(exc, OSError) else [arg for arg in exc.args if isinstance(arg, str)]  # (source, message)
        reason = " ".join((said[-1] if said else str(exc)).split()).rstrip(".") or type(exc).__name__
        raise WheelError(f"wheel {path.name} cannot be installed ({reason}); nothing was activated") from None
    compiled.extend(os.path.join(folder, name) for folder, name in written)
    return dist_info


def compile_one(path: str) -> None:
    try:
        py_compile.compile(path, doraise=True)
    except py_compile.PyCompileError:
        pass  # pip skips a module it cannot compile too (a Python 2 leftover, a template)


class Compiler:
    """Byte-compiles as pip does (timestamp .pyc), while the wheels are still being unpacked:
    once MANY files wait, in a pool of processes, one per CPU, fed CHUNK files at a time."""

    MANY, CHUNK = 64, 16

    def __init__(self) -> None:
        self.waiting: list[str] = []
        self.pool = None
        self.jobs: list = []
        self.workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)

    def add(self, paths: list[str]) -> None:
        self.waiting.extend(paths)
        if self.pool is None:
            if self.workers < 2 or len(self.waiting) < self.MANY:
                return
            import concurrent.futures
            import multiprocessing

            context = multiprocessing.get_context("fork")  # no re-import of this program per worker
            self.pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=context)
        for at in range(0, len(self.waiting), self.CHUNK):
            self.jobs.append(self.pool.submit(compile_many, self.waiting[at:at + self.CHUNK]))
        self.waiting = []

    def finish(self) -> None:
        """Every file added is compiled."""
        if self.pool is None:
            compile_many(self.waiting)
            return
        self.add([])
        for job in self.jobs:
            job.result()
        self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def compile_many(paths: list[str]) -> None:
    for path in paths:
        compile_one(path)


def fill(release: Path, previous: Path | None, home: str | None = None) -> tuple[dict, object]:
    """RELEASE/venv filled; what was done, and the store's donation still to run (or None)."""
    venv = release / "venv"
    started = time.monotonic()
    new = scheme(venv, "_")
    reusable = read_map(previous) if previous else {}
    old = scheme(previous, "_") if previous else {}
    store = Store.beside(venv, home)
    lines, linked, stored, fresh, installed, compiled, placed, made = [], [], [], [], [], [], 0, set()
    compiler = Compiler()
    try:
        with store.locked() if store else contextlib.nullcontext():
            for wheel, digest in release_wheels(release):
                # the running release's files first, then the store's: else installed afresh
                here = [(old, reusable[digest][1], linked)] if reusable.get(digest, ("",))[0] == wheel else []
                if store and (dist_info := store.find(digest, wheel)):
                    here.append((entry_scheme(store, digest), dist_info, stored))
                for source, dist_info, into in here:
                    try:
                        placed += link_distribution(source, new, dist_info, made)
                    except (OSError, ValueError, IndexError, csv.Error):
                        continue  # its files there were removed
                    into.append(wheel)
                    lines.append(f"{digest} {wheel} {dist_info}")
                    break
                else:
                    fresh.append((wheel, digest))
        for wheel, digest in fresh:
            before = len(compiled)
            dist_info = install_wheel(release / "wheels" / wheel, venv, compiled)
            compiler.add(compiled[before:])
            installed.append((wheel, digest, dist_info))
            lines.append(f"{digest} {wheel} {dist_info}")
        unpacked = time.monotonic()
        compiler.finish()
    finally:
        compiler.close()
    (venv / MAP).write_text("".join(line + "\n" for line in lines))
    report = {"linked": len(linked), "stored": len(stored), "files_linked": placed,
              "installed": [wheel for wheel, _, _ in installed], "compiled": len(compiled),
              "unpack_s": round(unpacked - started, 3), "compile_s": round(time.monotonic() - unpacked, 3)}
    # not the app's own wheel: a new one every deploy, and the release's alone
    donated = [one for one in installed if not one[0].lower().startswith(f"{host.PACKAGE.lower()}-")]
    return report, (lambda: donate(store, new, donated)) if store and installed else None


def entry_scheme(store: Store, digest: str) -> dict[str, str]:
    return scheme(store.entry(digest), "_")


def donate(store: Store, new: dict[str, str], installed: list[tuple[str, str, str]]) -> None:
    """What this venv installed afresh joins the host's store (linked, compiled), and the
    entries no venv links any more go. Never fails the install: the store is a cache."""
    def metadata(entry: Path, dist_info: str) -> Path:
        return Path(scheme(entry, "_")["purelib"]) / dist_info / "METADATA"

    try:
        with store.locked():
            for wheel, digest, dist_info in installed:
                if store.find(digest, wheel):
                    continue
                shutil.rmtree(store.entry(digest), ignore_errors=True)  # an unfinished one
                link_distribution(new, entry_scheme(store, digest), dist_info)
                store.mark(digest, wheel, dist_info)
            store.prune(metadata)
    except (OSError, ValueError, IndexError, csv.Error):
        pass


def main(argv: list[str]) -> int:
    release, previous = Path(argv[0]), (Path(argv[1]) if argv[1] != "-" else None)
    try:
        report, donation = fill(release, previous)
    except WheelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(report), flush=True)
    if donation and os.fork() == 0:  # the store is filled while the deploy goes on without it
        try:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            donation()
        finally:
            os._exit(0)
    return 0
