"""One command's world: its settings, the app's paths, how the app runs here, and the
lock, the history line and the clean-up that every command shares (Host.run)."""
import argparse
import errno
import ipaddress
import json
import os
import pwd
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from host import VARS, safe
from host.systemd import Service


class Failure(Exception):
    """One sentence for the user; the command stops (Host.finish puts back what it changed)."""

    def __init__(self, sentence: str, status: int = 1):
        super().__init__(sentence)
        self.status = status


def number(environ: dict, name: str, default: int | None) -> int | None:
    value = environ.get(name, "")
    if value == "":
        return default
    if not value.isdigit():
        raise Failure(f"{name} must be a number, got {value!r}")
    return int(value)


HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def bind_address(value: str) -> str:
    """BIND_HOST (several hosts behind the edge: this host's address that the proxy host
    reaches it by), an IP address or a host name, or Failure: it goes into gunicorn's bind and
    the unit's Environment= line."""
    if not value:
        return ""
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        if not HOST_NAME.fullmatch(value) or value.replace(".", "").isdigit():
            raise Failure(f"BIND_HOST {value!r} is neither an IP address nor a host name") from None
        return value


@dataclass(frozen=True)
class Settings:
    """What the deploying machine passed in the environment (the Makefile's REMOTE_ENV)."""
    app_dir: Path
    env: str = "prod"
    port: int | None = None
    keep: int = 5
    python: str = "python3"  # as configured: the units run the bootstrap with it
    stop_timeout: int = 30
    boot_timeout: int = 60
    log_max_kb: int = 51200
    log_keep: int = 5
    memory_max_kb: int | None = None  # the unit's MemoryMax and TasksMax ([deploy] memory_max, tasks_max)
    tasks_max: int | None = None
    who: str = "unknown"
    host_name: str = field(default_factory=socket.gethostname)
    lines: int = 100
    follow: bool = False
    confirm: bool = False
    force: bool = False  # db-restore: a backup of a schema revision this release does not know
    skip_release_command: bool = False
    process: str = ""  # make logs PROCESS=NAME: a worker's or a job's log
    job: str = ""  # make run-job JOB=NAME
    jobs_here: bool = True  # several hosts: only the jobs host ([deploy] jobs_host) runs the jobs
    # Several hosts behind the edge ([proxy] domain and host): on the proxy host, every host's
    # gunicorn as it reaches it (EDGE_UPSTREAMS, checked by the edge helper); on the others,
    # the proxy host's name (EDGE_PROXY) and this host's address that it reaches (BIND_HOST).
    upstreams: tuple[str, ...] = ()
    edge_proxy: str = ""
    bind_host: str = ""

    @classmethod
    def from_environment(cls, environ: dict) -> "Settings":
        app_dir = environ.get("APP_DIR", "")
        if not app_dir:
            raise Failure("APP_DIR is not set")
        port = number(environ, "PORT", None)
        if port is not None and not 1 <= port <= 65535:
            raise Failure(f"PORT must be between 1 and 65535, got {port}")
        if number(environ, "KEEP_RELEASES", 5) < 1:
            raise Failure("KEEP_RELEASES must be at least 1, got 0")
        return cls(
            app_dir=Path(app_dir if app_dir.startswith("/") else os.path.join(environ.get("HOME", "/"), app_dir)),
            env=environ.get("APP_ENV") or "prod", port=port, keep=number(environ, "KEEP_RELEASES", 5),
            python=environ.get("PYTHON") or "python3",
            stop_timeout=number(environ, "STOP_TIMEOUT", 30), boot_timeout=number(environ, "BOOT_TIMEOUT", 60),
            log_max_kb=number(environ, "LOG_MAX_KB", 51200), log_keep=number(environ, "LOG_KEEP", 5),
            memory_max_kb=number(environ, "MEMORY_MAX_KB", None), tasks_max=number(environ, "TASKS_MAX", None),
            who=environ.get("DEPLOY_WHO") or "unknown", host_name=environ.get("REMOTE_HOST") or socket.gethostname(),
            lines=number(environ, "LINES", 100), follow=bool(environ.get("FOLLOW")),
            confirm=environ.get("CONFIRM") == "1", force=environ.get("FORCE") == "1", skip_release_command=bool(environ.get("SKIP_RELEASE_COMMAND")),
            process=environ.get("PROCESS", ""), job=environ.get("JOB", ""), jobs_here=environ.get("JOBS") != "0",
            upstreams=tuple(environ.get("EDGE_UPSTREAMS", "").split()), edge_proxy=environ.get("EDGE_PROXY", ""),
            bind_host=bind_address(environ.get("BIND_HOST", "")))


def seconds(ms: float) -> str:
    return f"{ms / 1000:.3f}s"


def now_ms() -> float:
    return time.monotonic() * 1000


class Host:
    """The app's directory on this host, and the state a command must clean up after."""

    def __init__(self, settings: Settings, command: str):
        self.settings = settings
        self.command = command
        self.service: Service | None = None
        self.locked = False
        self.switched_from: str | None = None  # set from the switch until the new master serves
        self.smoke = None  # the smoke boot's gunicorn (a Popen) while it runs
        self.history: tuple[str, float, str] | None = None  # what, started (ms), from
        self.steps: list[tuple[str, float]] = []  # each step's name and seconds, for the result
        self.error = ""  # the sentence a failure said
        # gunicorn stopped and started, not handed over: a proxy's passive checks may leave
        # this host out a while (the rollout waits before the next host goes down).
        self.restarted = False
        self.release_configs: dict = {}  # release_config.read's answers, one config.py start each
        self.locate(settings.app_dir)

    def locate(self, app: Path) -> None:
        self.app = app
        self.releases = self.app / "releases"
        self.shared = self.app / "shared"
        self.run_dir = self.shared / "run"
        self.log_dir = self.shared / "log"
        self.current = self.app / "current"
        self.lock = self.app / ".deploy.lock"
        self.pidfile = self.run_dir / "gunicorn.pid"
        # Root's own state, beside shared/ and never in it: the app's account owns shared/
        # in a root deploy, and root trusts what is here (history, port, wheels, smoke socket).
        self.state = self.app / "state"

    @classmethod
    def from_environment(cls, command: str) -> "Host":
        return cls(Settings.from_environment(dict(os.environ)), command)

    # --- output -------------------------------------------------------------------------

    @staticmethod
    def say(*words: object, err: bool = False) -> None:
        """Output never stops us: the ssh client may be gone while we finish the job."""
        try:
            print(*words, file=sys.stderr if err else sys.stdout, flush=True)
        except OSError:
            pass

    def step(self, name: str, run, *args):
        """Run one named step and print how long it took."""
        started = now_ms()
        result = run(*args)
        took = now_ms() - started
        self.steps.append((name, round(took / 1000, 3)))
        self.say(f"  {name}: {seconds(took)}")
        return result

    def tail_log(self, log: Path) -> None:
        self.say(f"--- last lines of {log}:", err=True)
        try:  # the app's file: never through a link it planted
            fd = safe.open_file(log.parent, log.name, os.O_RDONLY)
        except OSError:
            return
        with os.fdopen(fd, "rb") as handle:
            handle.seek(max(0, os.fstat(fd).st_size - 65536))
            lines = handle.read().decode(errors="replace").splitlines()[-20:]
        for line in lines:
            self.say(line, err=True)

    # --- paths and releases ----------------------------------------------------------------

    def make_dirs(self) -> None:
        for path in (self.releases, self.shared, self.app / ".incoming"):
            path.mkdir(parents=True, exist_ok=True)
        # The deploying account's state; the app's own account (in the unit) never reaches it.
        mine = self.app.stat().st_uid == os.geteuid()
        if mine:
            self.state.mkdir(mode=0o700, exist_ok=True)
            (self.state / "wheels").mkdir(exist_ok=True)
        for path in (self.shared, self.state) if mine else (self.shared,):
            # The app's data, logs and secrets are its own, root's state is root's: no other
            # account on the host reads them.
            if not path.is_symlink() and path.stat().st_mode & 0o777 != 0o700:
                os.chmod(path, 0o700)
        for name in ("log", "run", "instance"):
            safe.make_dir(self.shared, name, 0o755, self.app_owner())
        if mine:
            self.move_old_state()

    def move_old_state(self) -> None:
        """Hosts deployed before state/ kept the history, the port and the wheel cache in
        shared/: the history and the port are read over once (without following a link), the
        cache goes (its wheels come again with the next upload)."""
        for old, new in (("deploys.log", "deploys.log"), ("run/port", "port")):
            if not (self.state / new).exists():
                text = safe.read_text(self.shared, old, limit=16 << 20)
                if text is not None:
                    safe.write_text(self.state, new, text, 0o644)
                    safe.unlink(self.shared, old)
        old_wheels = self.shared / "wheels"
        if old_wheels.is_symlink() or old_wheels.is_file():
            safe.unlink(self.shared, "wheels")
        elif old_wheels.is_dir():
            shutil.rmtree(old_wheels, ignore_errors=True)  # fd-based: it follows no link

    def app_owner(self) -> tuple[int, int] | None:
        """(uid, gid) of the app's own account in a root deploy, for what root writes in
        shared/; None when the app runs as us (or its account is not made yet)."""
        if self.service is None or self.service.kind != "system":
            return None
        try:
            account = pwd.getpwnam(self.service.app_user)
        except KeyError:
            return None
        return account.pw_uid, account.pw_gid

    def current_id(self) -> str | None:
        return Path(os.readlink(self.current)).name if self.current.is_symlink() else None

    def current_dir(self) -> Path:
        return self.releases / self.current_id()

    def need_current(self, what: str = "run make deploy first") -> str:
        release = self.current_id()
        if release is None:
            raise Failure(f"no release is current on this host yet: {what}")
        return release

    EDGE_RECORD = "edge.json"  # in state/: this host's place behind a proxy host, from its last deploy

    def recorded_edge(self) -> None:
        """A command given no edge words (make start REMOTE_HOST=web2, a reboot's unit) keeps
        the place the last deploy with REMOTE_HOSTS gave this host behind the proxy host: its
        gunicorn still binds the address that host reaches. A deploy with REMOTE_HOSTS sets it
        again (the proxy host's own clears it)."""
        s = self.settings
        if s.upstreams or s.edge_proxy or s.bind_host:
            return
        proxy, bind = self.edge_record()
        if proxy and bind:
            self.settings = replace(s, edge_proxy=proxy, bind_host=bind)

    def edge_record(self) -> tuple[str, str]:
        """The recorded proxy host and bind address, ("", "") when there is none."""
        try:
            recorded = json.loads((safe.read_text(self.state, self.EDGE_RECORD) if self.state.is_dir() else "") or "{}")
            return str(recorded.get("proxy", "")), bind_address(str(recorded.get("bind", "")))
        except (OSError, ValueError, AttributeError, Failure, safe.Unsafe):
            return "", ""

    def record_edge(self) -> None:
        s = self.settings
        if s.edge_proxy and s.bind_host:
            safe.write_text(self.state, self.EDGE_RECORD, json.dumps({"proxy": s.edge_proxy, "bind": s.bind_host}) + "\n",
                            0o644)
        elif s.upstreams:
            safe.unlink(self.state, self.EDGE_RECORD)

    def app_environment(self) -> None:
        """What the app and gunicorn.conf.py read: its environment, shared dir and config."""
        os.environ.update({f"{VARS}_ENV": self.settings.env, f"{VARS}_SHARED_DIR": str(self.shared),
                           f"{VARS}_CURRENT": str(self.current), f"{VARS}_LOCAL_CONFIG": str(self.shared / "local.ini")})
        if self.settings.port is not None:
            os.environ[f"{VARS}_SERVER_PORT"] = str(self.settings.port)
        # gunicorn.conf.py binds this address too (several hosts: the proxy host reaches it there)
        os.environ[f"{VARS}_BIND_HOST"] = self.settings.bind_host

    # --- one command, start to end ------------------------------------------------------------

    def run(self, cmd, args: argparse.Namespace) -> int:
        status = 0
        try:
            self.make_dirs()
            self.locate(Path(os.path.realpath(self.app)))
            self.recorded_edge()
            self.app_environment()
            self.service = Service.detect(self.app, self.settings.env, self.settings.host_name, unit_only=cmd.name in (
                "exec_master", "rotate_logs", "exec_worker", "exec_job"))
            if self.service.kind == "daemon" and cmd.name not in ("probe", "check_host"):
                from host.logs import rotate
                rotate(self)  # under systemd its timer does
            if cmd.recorded:
                self.history = (cmd.name, now_ms(), self.current_id() or "none")
            status = cmd.run(self, args) or 0
        except Failure as failure:
            if str(failure):
                self.error = str(failure)
                self.say(f"error: {failure}", err=True)
            status = failure.status
        except KeyboardInterrupt:
            status = 130
        except OSError as exc:  # one sentence, naming the file: a full disk, most likely
            where = f" ({exc.filename})" if exc.filename else ""
            full = " on the disk of the app's directory" if exc.errno == errno.ENOSPC else ""
            self.error = f"{exc.strerror or exc}{full}{where}"
            self.say(f"error: {self.error}", err=True)
            status = 1
        finally:
            status = self.finish(status)
        return status

    def finish(self, status: int) -> int:
        """On any end: a switched-but-unhealthy release is switched back, the smoke boot
        stopped, the history written, the lock released."""
        try:
            if self.switched_from:
                from host.serve import put_back
                put_back(self)
            if self.smoke is not None:
                from host.serve import smoke_stop
                smoke_stop(self)
            if self.history:
                self.record_history(status)
        except KeyboardInterrupt:
            status = 130
        finally:
            self.unlock_if_held()
            self.report(status)
        return status

    def report(self, status: int) -> None:
        """With REPORT=json (the deploy program asks so): the command's result as one JSON
        line, after everything else it printed. `to` is the release current now."""
        if os.environ.get("REPORT") != "json":
            return
        result = {"command": self.command, "status": status, "from": self.history[2] if self.history else None,
                  "to": self.current_id(), "steps": self.steps, "error": self.error,
                  "restarted": self.restarted}
        self.say("deploy-result: " + json.dumps(result))

    # --- the lock and the history ----------------------------------------------------------

    def take_lock(self, what: str = "") -> None:
        """Once per command: a command run inside another (start in db-restore) holds it already."""
        if self.locked:
            return
        from host.hold import refusal
        held = refusal(self)  # a deliberate hold comes first: it is never taken over
        if held:
            raise Failure(held)
        self.claim_environment()
        from host.releases import take_lock
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        refused = take_lock(self.lock, {"who": self.settings.who, "when": when, "version": what,
                                        "pid": str(os.getpid())})
        if refused:
            raise Failure(refused)
        self.locked = True

    def claimed_environment(self) -> str:
        """The environment whose app directory this is (state/environment), "" when unclaimed."""
        return (safe.read_text(self.state, "environment") or "").strip() if self.state.is_dir() else ""

    def environment_refusal(self) -> str | None:
        claimed, env = self.claimed_environment(), self.settings.env
        if claimed and claimed != env:
            return (f"{self.app} is the {claimed} environment's app directory, not {env}'s: give {env} its own "
                    f"[deploy] dir in config/{env}.ini (and its own [server] port)")
        return None

    def claim_environment(self) -> None:
        """An app directory is one environment's: state/environment names it at the first
        command that changes anything, and another environment's command is refused there
        (a `cp config/prod.ini config/staging.ini` that kept prod's [deploy] dir)."""
        if refused := self.environment_refusal():
            raise Failure(refused)
        if self.state.is_dir() and not self.claimed_environment():
            try:
                safe.write_text(self.state, "environment", self.settings.env + "\n", 0o644)
            except OSError:
                pass  # a full disk: the next command claims it (make stop must still work there)

    def unlock_if_held(self) -> None:
        if self.locked:
            from host.releases import remove
            remove(self.lock)
            self.locked = False

    def record_history(self, status: int) -> None:
        """state/deploys.log, append-only, one line per command that changes what runs:
        UTC time, who, what, from release, to release, result, duration."""
        what, started, was = self.history
        line = (f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {self.settings.who} {what} {was} "
                f"{self.current_id() or 'none'} {'ok' if status == 0 else 'failed'} {seconds(now_ms() - started)}")
        try:
            log = os.open(self.state / "deploys.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            with os.fdopen(log, "a") as handle:
                handle.write(line + "\n")
        except OSError:
            pass
        self.say(f"history: {line}")
