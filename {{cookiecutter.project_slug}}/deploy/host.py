"""The host program: the host-side steps of every make target that are more than a line of sh.

    python3 host.py COMMAND [ARGS]        (python3 host.py help: every command)

deploy/remote.sh (the bootstrap: paths, probe, systemd, the order of the steps) runs it
with the host's own Python; the Makefile sends both. Standard library only, Python 3.10+:
the guard below names a host that is too old. Every command is in COMMANDS, the one
registry that dispatch and help read. Pure helpers (release ordering, prune, rotation)
are unit-tested by import in tests/test_host.py.
"""
import sys

if sys.version_info < (3, 10):  # noqa: UP036 (the host's Python, not ours): a too-old host is named by its version
    sys.exit("error: host.py needs Python 3.10 or newer; this is " + sys.version.split()[0])

import argparse
import configparser
import http.client
import json
import os
import shutil
import signal
import socket
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# --- the command registry -------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    name: str
    run: Callable[[argparse.Namespace], int]
    help: str
    arguments: tuple = ()  # (flags, argparse keywords) pairs


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, *arguments: tuple) -> Callable:
    """Register the decorated function as host command NAME; ARGUMENTS are (flags, kwargs)."""
    def register(run: Callable[[argparse.Namespace], int]) -> Callable:
        COMMANDS[name] = Command(name, run, help, arguments)
        return run
    return register


def arg(*flags: str, **kwargs) -> tuple:
    return flags, kwargs


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="host.py", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS.values():
        sub = commands.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        for flags, kwargs in cmd.arguments:
            sub.add_argument(*flags, **kwargs)
    return top


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("help", "-h", "--help"):
        print("host.py COMMAND [ARGS]; the commands:")
        for cmd in COMMANDS.values():
            print(f"  {cmd.name:<14} {cmd.help}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown host command {argv[0]!r} (host.py help lists them)", file=sys.stderr)
        return 2
    args = parser().parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # output to a closed pipe ends us quietly
    return COMMANDS[args.command].run(args)


# --- processes, from /proc ------------------------------------------------------------


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has exited; only its parent has yet to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def master(pidfile: str, marker: str) -> bool:
    """Does the pidfile name a live gunicorn master of this app (pids are reused)?"""
    try:
        with open(pidfile) as handle:
            pid = int(handle.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return False
    return marker in cmdline and "/venv/bin/gunicorn" in cmdline and running(pid)


# --- healthz: ask a running release, over TCP or a unix socket -------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def get(args: argparse.Namespace, path: str, timeout: float = 5) -> tuple[int, bytes]:
    """GET path on the app; (status, body). Raises OSError when nothing answers."""
    if args.unix:
        conn: http.client.HTTPConnection = UnixHTTPConnection(args.unix, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(args.host, args.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def ask(args: argparse.Namespace) -> dict:
    status, body = get(args, "/healthz")
    if status != 200:
        raise OSError(f"HTTP {status}")
    return json.loads(body)


def check_paths(args: argparse.Namespace) -> int:
    """--paths: each must answer, and not with a 5xx (a redirect or a 404 is the app's own
    answer). Prints what failed, in one line."""
    for path in args.paths.split():
        try:
            status, _ = get(args, path, timeout=args.path_timeout)
        except (OSError, http.client.HTTPException) as exc:
            print(f"GET {path} got no answer ({exc or type(exc).__name__})")
            return 1
        if status >= 500:
            print(f"GET {path} answered {status}")
            return 1
    return 0


@command("healthz", "ask /healthz (or --paths) on a port or unix socket; with --wait, the one poller of a boot",
         arg("--host", default="127.0.0.1"), arg("--port", type=int), arg("--unix"),
         arg("--release", help="succeed only when this release answers"),
         arg("--wait", type=float, default=0, help="keep trying for this many seconds"),
         arg("--interval", type=float, default=0.2),
         arg("--pidfile", help="only while the master in this pidfile runs"),
         arg("--master", default="/releases/", help="a master's command line holds this"),
         arg("--pidfile-grace", type=float, default=10),
         arg("--watch-pid", type=int, help="give up once this process has exited"),
         arg("--paths", help="instead of /healthz: GET each of these (spaced), none may fail or 5xx"),
         arg("--path-timeout", type=float, default=30))
def cmd_healthz(args: argparse.Namespace) -> int:
    """Prints the JSON answer and exits 0 when it says "ok" (and, with --release, names that
    release); retries every --interval until --wait seconds have passed. With --pidfile it
    succeeds only while the gunicorn master named there runs, and gives up as soon as that
    master has come and gone (gunicorn halts by itself when a worker cannot boot) or has
    not written its pidfile within --pidfile-grace seconds (it does so before it loads the
    app); with --watch-pid, once that process has exited."""
    if args.paths is not None:
        return check_paths(args)
    started = time.monotonic()
    deadline = started + args.wait
    last, seen = "no answer", False
    while True:
        if args.watch_pid and not running(args.watch_pid):
            print(f"{last}; pid {args.watch_pid} exited")
            return 1
        if args.pidfile:
            if master(args.pidfile, args.master):
                seen = True
            elif seen or time.monotonic() > started + args.pidfile_grace:
                print(f"{last}; no master in {args.pidfile}" + (" (it exited)" if seen else ""))
                return 1
            else:
                time.sleep(args.interval)
                continue
        try:
            answer = ask(args)
            last = json.dumps(answer)
            if answer.get("status") == "ok" and args.release in (None, answer.get("release")):
                print(last)
                return 0
        except (OSError, ValueError, http.client.HTTPException) as exc:
            last = f"no answer ({exc})"
        if time.monotonic() >= deadline:
            print(last)
            return 1
        time.sleep(args.interval)


# --- releases: their order, the one before, and what a prune removes -------------------


def release_time(release_id: str) -> str:
    """Ids end in a UTC timestamp (<version>-20261201T093620Z); versions do not sort."""
    return release_id.rsplit("-", 1)[-1]


@dataclass(frozen=True)
class Releases:
    """What releases/ holds: finished ones oldest first, and the unfinished and refused."""
    finished: list[str]
    unfinished: list[str]
    refused: list[str]

    @classmethod
    def read(cls, releases: Path) -> "Releases":
        finished, unfinished, refused = [], [], []
        try:
            entries = sorted(entry.name for entry in os.scandir(releases) if entry.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            entries = []
        for name in entries:
            if (releases / name / ".unfinished").exists():
                unfinished.append(name)
            elif (releases / name / ".refused").exists():
                refused.append(name)
            else:
                finished.append(name)
        return cls(sorted(finished, key=release_time), unfinished, refused)

    def previous(self, current: str | None) -> str | None:
        """The newest finished release older than current (a rollback's target)."""
        if current not in self.finished:
            return None
        index = self.finished.index(current)
        return self.finished[index - 1] if index > 0 else None

    def to_prune(self, current: str | None, keep: int) -> list[str]:
        """Beyond the newest KEEP finished ones, never current or the one before it; every
        unfinished install; every refused release but current."""
        protected = {current, self.previous(current)}
        old = self.finished[:-keep] if keep > 0 else list(self.finished)
        return [*self.unfinished, *(r for r in self.refused if r != current),
                *(r for r in old if r not in protected)]


def current_release(app_dir: Path) -> str | None:
    link = app_dir / "current"
    return Path(os.readlink(link)).name if link.is_symlink() else None


def app_dir_arg() -> tuple:
    return arg("--app-dir", type=Path, required=True, help="the app's directory (APP_DIR)")


@command("releases", "list the releases on the host, marking current", app_dir_arg())
def cmd_releases(args: argparse.Namespace) -> int:
    releases, current = Releases.read(args.app_dir / "releases"), current_release(args.app_dir)
    for release in releases.finished:
        print(f"* {release} (current)" if release == current else f"  {release}")
    for release in releases.unfinished:
        print(f"  {release} (unfinished, removed by the next deploy)")
    for release in releases.refused:
        print(f"  {release} (refused: failed to boot, removed by the next deploy)")
    return 0


@command("finished", "the finished releases, oldest first, one a line", app_dir_arg())
def cmd_finished(args: argparse.Namespace) -> int:
    for release in Releases.read(args.app_dir / "releases").finished:
        print(release)
    return 0


@command("previous", "the release a rollback goes to (fails when there is none)", app_dir_arg())
def cmd_previous(args: argparse.Namespace) -> int:
    previous = Releases.read(args.app_dir / "releases").previous(current_release(args.app_dir))
    if previous is None:
        return 1
    print(previous)
    return 0


def backups_to_prune(backups: list[str], oldest_kept: str | None) -> list[str]:
    """A release's backup goes with it: those of releases older than the oldest one kept
    (manual ones stay; a refused release's backup stays until then)."""
    if oldest_kept is None:
        return []
    return [name for name in backups if name.endswith(".backup") and not name.startswith("manual-")
            and release_time(name.removesuffix(".backup")) < release_time(oldest_kept)]


def remove(path: Path) -> None:
    """A file, link or directory, never following a link."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def referenced_wheels(releases: Path) -> set[str]:
    """The sha256 of every wheel a release still on the host brought."""
    keep = set()
    for sums in releases.glob("*/SHA256SUMS"):
        for line in sums.read_text().splitlines():
            digest, _, name = line.partition("  ")
            if name.startswith("wheels/"):
                keep.add(digest)
    return keep


def plain_dir(path: Path) -> bool:
    """A directory that is no symlink: prune never deletes through a link someone planted."""
    return path.is_dir() and not path.is_symlink()


@command("prune", "keep the newest KEEP releases, never current or the one before; drop unfinished work, "
         "refused releases, their backups and unused cached wheels",
         app_dir_arg(), arg("--keep", type=int, required=True))
def cmd_prune(args: argparse.Namespace) -> int:
    app, releases_dir = args.app_dir, args.app_dir / "releases"
    releases, current = Releases.read(releases_dir), current_release(app)
    for release in releases.to_prune(current, args.keep):
        remove(releases_dir / release)
    left = Releases.read(releases_dir)
    backups = app / "shared" / "backups"
    if plain_dir(backups):
        for name in backups_to_prune(sorted(os.listdir(backups)), (left.finished or [None])[0]):
            (backups / name).unlink(missing_ok=True)
    wheels = app / "shared" / "wheels"
    if plain_dir(wheels):
        keep = referenced_wheels(releases_dir)
        for entry in os.scandir(wheels):
            if not entry.name.startswith(".") and entry.name not in keep and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
    incoming, hour_ago = app / ".incoming", time.time() - 3600
    if plain_dir(incoming):
        for entry in os.scandir(incoming):
            if entry.stat(follow_symlinks=False).st_mtime < hour_ago:
                remove(Path(entry.path))
    return 0


# --- logs: rotated by rename, then USR1 ---------------------------------------------------


def rotation(log: Path, keep: int) -> list[tuple[Path, Path]]:
    """The renames that rotate LOG, in order: .keep-1 → .keep, …, .1 → .2, log → .1
    (the oldest, .keep, is overwritten by the first rename)."""
    moves = [(log.with_name(f"{log.name}.{n - 1}"), log.with_name(f"{log.name}.{n}")) for n in range(keep, 1, -1)]
    return [*moves, (log, log.with_name(f"{log.name}.1"))]


@command("rotate-logs", "rotate gunicorn.log and access.log past --max-kb, keeping --keep, then USR1 the master",
         arg("--log-dir", type=Path, required=True), arg("--max-kb", type=int, required=True),
         arg("--keep", type=int, required=True), arg("--pidfile"), arg("--master", default="/releases/"))
def cmd_rotate_logs(args: argparse.Namespace) -> int:
    """Rename (gunicorn keeps writing to the renamed file), then USR1, on which gunicorn and
    its workers reopen their logs: every line lands in the old file or the new one."""
    rotated = False
    for log in (args.log_dir / "gunicorn.log", args.log_dir / "access.log"):
        try:
            if log.is_symlink() or log.stat().st_size // 1024 < args.max_kb:
                continue
        except FileNotFoundError:
            continue
        log.with_name(f"{log.name}.{args.keep}").unlink(missing_ok=True)
        for source, target in rotation(log, args.keep):
            if source.exists() and not source.is_symlink():
                os.replace(source, target)
        rotated = True
    if rotated and args.pidfile and master(args.pidfile, args.master):
        os.kill(int(Path(args.pidfile).read_text().strip()), signal.SIGUSR1)
    return 0


# --- install: the fast venv when only the app's own wheel changed ---------------------------


def site_packages(venv: Path) -> Path:
    (site,) = venv.glob("lib/python*/site-packages")
    return site


def write_script(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


@command("install-app", "swap the app's own wheel into a venv that holds the running release's dependencies",
         arg("old_venv", type=Path), arg("new_venv", type=Path), arg("app_wheel", type=Path))
def cmd_install_app(args: argparse.Namespace) -> int:
    """remote.sh calls it only when every dependency wheel is byte for byte (sha256) the one
    the running release installed, for the same Python, and after it has put the old venv's
    site-packages into the new venv as hard links to read-only files (or copies, where links
    fail): no two releases share a file that can change. This removes the old release of the
    app from the new venv (unlinks: the old release keeps its files), unpacks the app's wheel
    (pure Python, ours), writes its console scripts, and gives the new venv the old one's
    other scripts (gunicorn, flask, …) as new files with `#!` pointing at the new python."""
    old_venv, new_venv = args.old_venv, args.new_venv
    old_site, new_site = site_packages(old_venv), site_packages(new_venv)
    if old_site.parent.name != new_site.parent.name:
        print(f"host.py install-app: {old_site.parent.name} is not {new_site.parent.name}", file=sys.stderr)
        return 2
    with zipfile.ZipFile(args.app_wheel) as wheel:
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
