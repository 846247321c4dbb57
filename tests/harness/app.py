"""The handle on a deployed app, and the process and HTTP helpers every test shares.

    app = new_app(project, sshd_host, tmp_path_factory, request)   # stopped at teardown
    app.deploy()
    healthz(app.port)["release"] == app.current()
    fleet = Fleet(project, namespace_hosts)                        # REMOTE_HOSTS=web1 web2 …

Liveness is read from /proc: a process is dead when /proc/PID is gone or its state is Z
(a zombie). An empty cmdline is not death: a process shows one for a moment while it
execs (remote.sh relies on the same rule).

Teardown has one policy (App.stop_everything): wait for a deploy still running on the
host, `make stop`, SIGKILL whatever of the app is left, and fail if anything outlived
`make stop`.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from .sshd import free_port

LOCALHOST = "127.0.0.1"


# --- running make in a baked project --------------------------------------------------


def make(project: Path, *args: str, check: bool = True, timeout: float = 600, **variables: str):
    """Run `make ARGS VAR=value…` in a baked project; returns the CompletedProcess."""
    command = ["make", "--no-print-directory", *args, *(f"{k}={v}" for k, v in variables.items())]
    result = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


# --- HTTP and ports ---------------------------------------------------------------------


def healthz(where: int | str, port: int | None = None, timeout: float = 10, check: bool = True) -> dict | None:
    """GET /healthz, a new connection each time. `where`: a port on 127.0.0.1, or an address
    (then `port` too). A failure (no answer, not HTTP 200, not JSON) raises, or with
    check=False returns None (for polling until an app is up)."""
    address, port = (LOCALHOST, where) if isinstance(where, int) else (where, port)
    if port is None:
        raise ValueError(f"healthz({where!r}): an address needs a port")
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", "/healthz", headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise AssertionError(f"GET http://{address}:{port}/healthz: HTTP {response.status}")
        return json.loads(body)
    except (OSError, http.client.HTTPException, ValueError, AssertionError):
        if check:
            raise
        return None
    finally:
        conn.close()


def port_open(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:PORT."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((LOCALHOST, port)) == 0


# --- processes, from /proc ----------------------------------------------------------------


def pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name ([] when the process is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def alive(pid: int) -> bool:
    """True unless the process is gone: no /proc/PID, or a zombie (state Z). An empty
    cmdline does not count: a process has one for a moment while it execs."""
    state = _stat(pid)[:1]
    return bool(state) and state[0] != "Z"


def ppid(pid: int) -> int:
    """The parent's pid; 0 when the process is gone."""
    fields = _stat(pid)
    return int(fields[1]) if len(fields) > 1 else 0


def children(pid: int) -> list[int]:
    return [p for p in pids() if ppid(p) == pid]


def argv(pid: int) -> list[str]:
    """The process's arguments ([] when it is gone, a zombie, or mid-exec)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def cmdline(pid: int) -> str:
    """The arguments joined by spaces, for substring checks ("" when there are none)."""
    return " ".join(argv(pid))


def dead_pid() -> int:
    """The pid of a process that has exited (and whose pid nobody has taken since)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert not alive(proc.pid)
    return proc.pid


def wait_for(predicate, seconds: float, what: str, interval: float = 0.05):
    """Poll until predicate() is true and return its value; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {seconds}s waiting for {what}"
        time.sleep(interval)
    return value


def tree(root: Path) -> dict[str, tuple]:
    """Every path under root with its type, size and mtime: to prove nothing changed."""
    snapshot = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        snapshot[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return snapshot


# --- a stage, the generated docs/stages.md's way ----------------------------------------------

WORKFLOW_OPTIONS = "        options:\n          - prod\n"


@contextlib.contextmanager
def stage(project: Path, name: str = "staging"):
    """`cp config/prod.ini config/NAME.ini`, and NAME offered by deploy.yml's input (make test,
    which every deploy runs, checks that); both undone afterwards."""
    config, workflow = project / "config", project / ".github" / "workflows" / "deploy.yml"
    saved = workflow.read_text()
    assert WORKFLOW_OPTIONS in saved
    shutil.copy(config / "prod.ini", config / f"{name}.ini")
    workflow.write_text(saved.replace(WORKFLOW_OPTIONS, WORKFLOW_OPTIONS + f"          - {name}\n"))
    try:
        yield project
    finally:
        (config / f"{name}.ini").unlink()
        workflow.write_text(saved)


# --- one app on one host ------------------------------------------------------------------


class App:
    """One app on the host: REMOTE_DIR and PORT, and the make variables that name them."""

    def __init__(self, project: Path, host, remote_dir: Path, port: int):
        self.project, self.host, self.dir, self.port = project, host, remote_dir, port

    @property
    def vars(self) -> dict[str, str]:
        return dict(REMOTE_HOST=self.host.host_alias, SSH_OPTS=self.host.ssh_opts,
                    REMOTE_DIR=str(self.dir), PORT=str(self.port))

    def make(self, *targets: str, check: bool = True, **overrides: str | None):
        """`make TARGETS` with this app's variables; an override of None leaves one out."""
        variables = {k: v for k, v in {**self.vars, **overrides}.items() if v is not None}
        return make(self.project, *targets, check=check, **variables)

    def popen_make(self, *targets: str, log: Path) -> subprocess.Popen[bytes]:
        """`make TARGETS` in its own process group, output to `log`."""
        command = ["make", "--no-print-directory", *targets, *(f"{k}={v}" for k, v in self.vars.items())]
        with open(log, "wb") as out:
            return subprocess.Popen(command, cwd=self.project, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

    def deploy(self, check: bool = True):
        started = time.monotonic()
        result = self.make("deploy", check=check)
        wall = time.monotonic() - started
        host = re.search(r"^\s*host: (\d+\.\d{3})s$", result.stdout, re.M)
        steps = " ".join(f"{m[0]} {m[1]}s" for m in re.findall(r"^\s+(\w+): ([\d.]+)s$", result.stdout, re.M))
        print(f"deploy to {self.dir.parent.name}: exit {result.returncode}, wall {wall:.1f}s, "
              f"host {float(host.group(1)) if host else '?'}s ({steps})")  # shown with -s or -rP
        return result

    def healthz(self) -> dict:
        return healthz(self.port)

    def release(self) -> str:
        return self.healthz()["release"]

    @property
    def run_dir(self) -> Path:
        return self.dir / "shared" / "run"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "gunicorn.pid"

    def pid(self) -> int:
        return int(self.pidfile.read_text().strip())

    def current(self) -> str:
        return os.path.basename(os.readlink(self.dir / "current"))

    def releases(self) -> set[str]:
        """The names under releases/ (finished or not)."""
        return {p.name for p in (self.dir / "releases").iterdir()}

    @property
    def lock(self) -> Path:
        return self.dir / ".deploy.lock"

    def lock_info(self) -> str:
        try:
            return (self.lock / "info").read_text()
        except OSError:
            return ""

    def lock_released(self) -> bool:
        """The lock dir is gone, or its holder is dead (a stale lock the next deploy takes over)."""
        try:
            info = (self.lock / "info").read_text()
        except FileNotFoundError:
            return not self.lock.exists()
        holder = next((line[4:] for line in info.splitlines() if line.startswith("pid=")), "")
        return holder.isdigit() and not alive(int(holder))

    def processes(self) -> list[int]:
        """Every process that runs from this app's releases (masters, workers, smoke boots)."""
        marker = f"{self.dir}/releases/"
        return [pid for pid in pids() if pid != os.getpid() and marker in cmdline(pid)]

    def stop_everything(self) -> None:
        """Teardown: `make stop`, then kill what is left (pidfiles first) and fail if there was any."""
        # a deploy still running on the host (its make was killed by a failing test) finishes first
        deadline = time.monotonic() + 120
        while (holder := re.search(r"^pid=(\d+)$", self.lock_info(), re.M)) and alive(int(holder.group(1))) \
                and "remote.sh" in cmdline(int(holder.group(1))) and time.monotonic() < deadline:
            time.sleep(0.2)
        result = self.make("stop", check=False) if (self.dir / "remote.sh").exists() else None
        leftovers = []
        for name in ("gunicorn.pid", "gunicorn.pid.2", "smoke/smoke.pid"):
            try:
                pid = int((self.run_dir / name).read_text().strip())
            except (OSError, ValueError):
                continue
            if str(self.dir) in cmdline(pid):
                leftovers.append(pid)
        leftovers += [p for p in self.processes() if p not in leftovers]
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if result is not None and result.returncode != 0:
            raise AssertionError(f"make stop failed for {self.dir}:\n{output(result)}")
        deadline = time.monotonic() + 10
        while any(alive(p) for p in leftovers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in leftovers if alive(p)], "processes survived KILL"
        assert not leftovers, f"processes of {self.dir} outlived make stop: {leftovers}"


def new_app(project: Path, host, tmp_path_factory, request) -> App:
    """An app in a fresh REMOTE_DIR on a free port, stopped (strictly) when `request` ends."""
    app = App(project, host, tmp_path_factory.mktemp("host") / "app", free_port())
    request.addfinalizer(app.stop_everything)
    return app


# --- several hosts deployed to as one -------------------------------------------------------

# A row of the rollout summary: host, target, old, new, result, time.
ROW = re.compile(r"^\s+(web\d)\s+(?P<target>\S+)\s+(\S+)\s+(\S+)\s+(.+?)\s+(\d+\.\d+s|-)$", re.M)


def table(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, ...]]:
    """The summary table's rows by host: (host, old, new, result, time); targets() has the rest."""
    return {m.group(1): m.groups()[:1] + m.groups()[2:] for m in ROW.finditer(result.stdout)}


def targets(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {m.group(1): m["target"] for m in ROW.finditer(result.stdout)}


class Fleet:
    """One project on namespace hosts (harness.netns.NamespaceHosts), all on the same PORT:
    REMOTE_HOSTS names them all. Each rollout's timing line goes to `timings` too."""

    def __init__(self, project: Path, hosts, port: int = 8000, timings: list[str] | None = None) -> None:
        self.project, self.hosts, self.port = project, hosts, port
        self.timings = timings if timings is not None else []

    @property
    def vars(self) -> dict[str, str]:
        return dict(REMOTE_HOSTS=self.hosts.aliases, SSH_OPTS=self.hosts.ssh_opts,
                    REMOTE_DIR=str(self.hosts.remote_dir), PORT=str(self.port))

    def make(self, *targets: str, check: bool = True, **overrides: str) -> subprocess.CompletedProcess[str]:
        return make(self.project, *targets, check=check, **{**self.vars, **overrides})

    def deploy(self, label: str, check: bool = True, **overrides: str):
        started = time.monotonic()
        result = self.make("deploy", check=check, **overrides)
        wall = time.monotonic() - started
        rows = table(result)
        hosts = ", ".join(f"{name} {row[3]} {row[4]}" for name, row in rows.items())
        self.timings.append(f"rollout ({label}): exit {result.returncode}, wall {wall:.1f}s; {hosts}")
        print(self.timings[-1])
        return result, rows, wall

    def current(self, index: int) -> str:
        """The release `current` points to in host INDEX's own deploy directory."""
        link = self.hosts[index].dir / "current"
        return Path(link.readlink()).name if link.is_symlink() else "none"

    def serving(self, index: int) -> str:
        return healthz(self.hosts[index].address, self.port)["release"]
