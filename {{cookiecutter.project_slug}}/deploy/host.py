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
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import zipfile
import zlib
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


# --- the deploy lock: mkdir is atomic; the holder's pid tells a stale lock apart ------------


def lock_info(lock: Path) -> dict[str, str]:
    try:
        return read_release(lock / "info")
    except OSError:
        return {}


def describe(info: dict[str, str]) -> str:
    return " ".join(f"{key}={value}" for key, value in info.items()) or "no details"


def holder_alive(info: dict[str, str]) -> bool:
    """Is the lock's holder a live host script? A pid alone proves nothing: pids are reused."""
    pid = info.get("pid", "")
    if not pid.isdigit():
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"remote.sh" in cmdline and running(int(pid))


def take_lock(lock: Path, info: dict[str, str]) -> str | None:
    """Take LOCK for INFO's holder; None when taken, else the sentence that refuses it. A stale
    lock (its holder dead) is taken over under LOCK.takeover, a mutex of its own, so that two
    deploys that both found it stale cannot both win."""
    text = "".join(f"{key}={value}\n" for key, value in info.items())
    try:
        lock.mkdir()
    except FileExistsError:
        held = lock_info(lock)
        # No pid: its taker is writing the info now, or someone holds it by hand: held.
        if not held.get("pid", "").isdigit() or holder_alive(held):
            return (f"another deploy holds the lock on {lock.parent} ({describe(held)}); "
                    "wait for it, or run make unlock if it is dead")
        takeover = lock.with_name(lock.name + ".takeover")
        try:
            takeover.mkdir()
        except FileExistsError:
            return f"another deploy is taking over the stale lock on {lock.parent} just now"
        try:
            if lock_info(lock) != held:
                return f"another deploy took the lock on {lock.parent} just now"
            print(f"taking over a stale deploy lock ({describe(held)})")
            remove(lock)
            lock.mkdir()
        finally:
            takeover.rmdir()
    tmp = lock / ".info.tmp"
    tmp.write_text(text)
    os.replace(tmp, lock / "info")
    return None


@command("lock", "take the deploy lock for the host script --pid (a stale one is taken over)",
         app_dir_arg(), arg("--pid", required=True), arg("--who", default="unknown"), arg("--version", default=""))
def cmd_lock(args: argparse.Namespace) -> int:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    refused = take_lock(args.app_dir / ".deploy.lock", {"who": args.who, "when": when, "version": args.version,
                                                        "pid": args.pid})
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 1
    return 0


# --- systemd units: the app's service, and the timer that rotates its logs -------------------


@dataclass(frozen=True)
class Units:
    """What the units of one app directory are made of (remote.sh detect_service)."""
    dist: str
    env: str
    app_dir: str
    unit: str
    kind: str  # "user" or "system"
    app_user: str
    port: str
    python: str
    log_max_kb: str
    log_keep: str
    boot_timeout: int = 60
    stop_timeout: int = 30

    def common(self) -> list[str]:
        """Who runs it, where, and the sandbox: what every unit of this app shares."""
        environment = (f"APP_DIR={self.app_dir} APP_ENV={self.env} PORT={self.port} PYTHON={self.python} "
                       f"LOG_MAX_KB={self.log_max_kb} LOG_KEEP={self.log_keep}")
        lines = [f"Environment={environment}"]
        if self.kind == "system":
            home = "read-only" if self.app_dir.startswith(("/home/", "/root/")) else "yes"
            lines += [f"User={self.app_user}", f"Group={self.app_user}", "NoNewPrivileges=yes", "PrivateTmp=yes",
                      "ProtectSystem=strict", f"ReadWritePaths={self.app_dir}/shared", f"ProtectHome={home}"]
        return lines

    def service(self) -> str:
        """Type=forking on gunicorn's pidfile. Restart=always, not on-failure: a new master that
        dies while the old one still drains leaves systemd, once the old one exits 0, with a
        pidfile naming a dead process: the unit ends "successfully", and on-failure would leave
        the site down. (A hand-over's own TERM of the old master restarts nothing: systemd
        adopts the new one first.)"""
        wanted = "default.target" if self.kind == "user" else "multi-user.target"
        return "\n".join([
            f"# Written by {self.dist}'s deploy/remote.sh for {self.app_dir}; every deploy rewrites it.",
            "[Unit]", f"Description={self.dist} ({self.env}) from {self.app_dir}", "After=network.target", "",
            "[Service]", "Type=forking", f"PIDFile={self.app_dir}/shared/run/gunicorn.pid",
            f"ExecStart=/bin/sh {self.app_dir}/remote.sh exec_master", "Restart=always", "RestartSec=1",
            f"TimeoutStartSec={self.boot_timeout}", f"TimeoutStopSec={self.stop_timeout + 5}",
            *self.common(), "", "[Install]", f"WantedBy={wanted}", ""])

    def rotate_service(self) -> str:
        return "\n".join([
            f"# Written by {self.dist}'s deploy/remote.sh: rotates {self.app_dir}/shared/log (see rotate_logs).",
            "[Unit]", f"Description=rotate the logs of {self.dist} ({self.env}) from {self.app_dir}", "",
            "[Service]", "Type=oneshot", f"ExecStart=/bin/sh {self.app_dir}/remote.sh rotate_logs", *self.common(), ""])

    def rotate_timer(self) -> str:
        return "\n".join([
            "[Unit]", f"Description=rotate the logs of {self.dist} ({self.env}) every 5 minutes", "",
            "[Timer]", "OnBootSec=5min", "OnUnitActiveSec=5min", "", "[Install]", "WantedBy=timers.target", ""])

    def files(self) -> dict[str, str]:
        return {f"{self.unit}.service": self.service(), f"{self.unit}-logs.service": self.rotate_service(),
                f"{self.unit}-logs.timer": self.rotate_timer()}


def replace_if_changed(path: Path, text: str) -> bool:
    """Write TEXT to PATH (atomically) unless it already holds it; True when written."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


@command("write-units", "write the app's systemd units where they changed, then daemon-reload",
         arg("--unit-dir", type=Path, required=True), arg("--dist", required=True), arg("--env", required=True),
         app_dir_arg(), arg("--unit", required=True), arg("--kind", choices=("user", "system"), required=True),
         arg("--app-user", required=True), arg("--port", required=True), arg("--python", required=True),
         arg("--log-max-kb", required=True), arg("--log-keep", required=True),
         arg("--boot-timeout", type=int, default=60), arg("--stop-timeout", type=int, default=30))
def cmd_write_units(args: argparse.Namespace) -> int:
    units = Units(args.dist, args.env, str(args.app_dir), args.unit, args.kind, args.app_user, args.port,
                  args.python, args.log_max_kb, args.log_keep, args.boot_timeout, args.stop_timeout)
    args.unit_dir.mkdir(parents=True, exist_ok=True)
    changed = [name for name, text in units.files().items() if replace_if_changed(args.unit_dir / name, text)]
    if changed:
        systemctl = ["systemctl", "--user"] if args.kind == "user" else ["systemctl"]
        reloaded = subprocess.run([*systemctl, "daemon-reload"], check=False)
        if reloaded.returncode != 0:
            print(f"error: {' '.join(systemctl)} daemon-reload failed after writing {', '.join(changed)}",
                  file=sys.stderr)
            return 1
        print(f"  wrote {args.unit_dir / (args.unit + '.service')}")
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


# --- install: verify the upload, unpack it as a release, build its venv offline --------------


class Refusal(Exception):
    """One sentence for the user: the install stops, the running release is untouched."""

    def __init__(self, sentence: str, status: int = 1):
        super().__init__(sentence)
        self.status = status


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


def read_release(path: Path) -> dict[str, str]:
    """The RELEASE file: name=…, version=…, python=>=3.10, target=…"""
    pairs = (line.partition("=") for line in path.read_text().splitlines())
    return {key: value for key, _, value in pairs if key}


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


@command("install", "verify an upload in .incoming, unpack it into releases/<id> and build its venv offline",
         app_dir_arg(), arg("--upload", required=True), arg("--sha256", required=True),
         arg("--dist", required=True), arg("--python", required=True),
         arg("--host-name", default=socket.gethostname()),
         arg("--result", type=Path, required=True, help="write release=<id> and python=<interpreter> here"))
def cmd_install(args: argparse.Namespace) -> int:
    """A release that did not finish installing is marked .unfinished and never activated."""
    incoming, releases = args.app_dir / ".incoming", args.app_dir / "releases"
    tarball, scratch = incoming / args.upload, incoming / f"unpack.{os.getpid()}"
    try:
        if not tarball.is_file():
            raise Refusal(f"upload {args.upload} is not in {incoming}")
        if sha256(tarball) != args.sha256:
            raise Refusal(f"upload {args.upload} is incomplete or corrupt (sha256 mismatch); nothing was installed")
        try:
            unpack(tarball, scratch)
            if not (scratch / "RELEASE").is_file():
                raise Refusal(f"upload {args.upload} has no RELEASE file; nothing was installed")
            python = fits(scratch, args.python, args.host_name)
        except Refusal:
            remove(scratch)
            tarball.unlink(missing_ok=True)
            raise
        except (tarfile.TarError, OSError, EOFError, zlib.error):
            remove(scratch)
            tarball.unlink(missing_ok=True)
            raise Refusal(f"cannot unpack {args.upload}; nothing was installed") from None
        try:
            fill_and_verify(scratch, args.app_dir / "shared" / "wheels")
        except Refusal:
            remove(scratch)
            raise
        release_id = new_release_id(releases, read_release(scratch / "RELEASE")["version"])
        release = releases / release_id
        (scratch / ".unfinished").touch()  # removed only when the venv is complete
        os.rename(scratch, release)
        how = build_venv(release, python, args)
    except Refusal as refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return refusal.status
    cache_wheels(release, args.app_dir / "shared" / "wheels")
    (release / ".unfinished").unlink()
    tarball.unlink(missing_ok=True)
    args.result.write_text(f"release={release_id}\npython={python}\n")
    print(f"  installed release {release_id}{how}")
    return 0


def build_venv(release: Path, python: str, args: argparse.Namespace) -> str:
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
    current = args.app_dir / "current"
    previous = current.resolve() if current.is_symlink() else None
    sums = read_sums(release)
    if (previous and (previous / "SHA256SUMS").is_file() and venv_identity(previous / "venv")
            and venv_identity(previous / "venv") == venv_identity(venv)
            and dependency_sums(read_sums(previous), args.dist) == dependency_sums(sums, args.dist)):
        try:
            for old_site in (previous / "venv").glob("lib/python*/site-packages"):
                new_site = venv / "lib" / old_site.parent.name / "site-packages"
                shutil.rmtree(new_site)
                link_tree(old_site, new_site)
            app_wheel = next(release / name for name in sums
                             if name.startswith("wheels/" + args.dist.replace("-", "_").replace(".", "_") + "-"))
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
        print(f"host.py install: {old_site.parent.name} is not {new_site.parent.name}", file=sys.stderr)
        return 2
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
