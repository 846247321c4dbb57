"""Processes, from /proc (pids are reused: a pid is ours only if its command line says so),
and the app's answers over HTTP, on its port or a unix socket."""
import http.client
import json
import os
import signal
import socket
import struct
import time
from pathlib import Path

from host import safe


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has exited; only its parent has yet to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def read_pid(pidfile: Path) -> int | None:
    """The pid in PIDFILE, read without following a link or opening a fifo (the app's
    account writes the pidfiles, and may plant either)."""
    text = (safe.read_text(pidfile.parent, pidfile.name, limit=64) or "").strip()
    return int(text) if text.isdigit() else None


def is_master(pid: int | None, releases: Path) -> bool:
    """Does PID run a gunicorn of one of this app's releases?"""
    return bool(pid) and f"{releases}/" in cmdline(pid) and "/venv/bin/gunicorn" in cmdline(pid) and running(pid)


def master_pid(pidfile: Path, releases: Path) -> int | None:
    """The live master named in PIDFILE, or None."""
    pid = read_pid(pidfile)
    return pid if is_master(pid, releases) else None


def parent_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def children_of(pid: int) -> set[int]:
    """The live processes whose parent is PID."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    state, parent = stat.read().rsplit(")", 1)[1].split()[:2]
            except (OSError, ValueError):
                continue
            if parent == str(pid) and state != "Z":
                found.add(int(entry))
    return found


def uptime(pid: int) -> str:
    """How long PID has run, as ps's etime prints it: [[DD-]HH:]MM:SS."""
    try:
        started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        since_boot = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return "?"
    total = max(0, int(since_boot - started / os.sysconf("SC_CLK_TCK")))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}" if days or hours else f"{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def pids_running(text: str) -> list[int]:
    """Every process whose command line holds TEXT."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and text in cmdline(int(entry))]


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return not Path(f"/proc/{pid}").exists()


def stop_pid(pid: int, seconds: float, say=print) -> None:
    """TERM, up to SECONDS for it to go, then KILL. Never fails: it may be gone already."""
    signal_quietly(pid, signal.SIGTERM)
    if wait_gone(pid, seconds):
        return
    say(f"pid {pid} ignored TERM for {seconds:g}s: sending KILL")
    signal_quietly(pid, signal.SIGKILL)
    wait_gone(pid, 5)


def signal_quietly(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass


# --- HTTP: the app's answers -------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP on a unix socket; with PEER_UID, only to a server of that account (the smoke
    socket's directory is the app's: in a root deploy it could name another program's)."""

    def __init__(self, path: str, timeout: float, peer_uid: int | None = None):
        super().__init__("localhost", timeout=timeout)
        self.unix_path, self.peer_uid = path, peer_uid

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)
        if self.peer_uid is not None:
            _pid, uid, _gid = struct.unpack("3i", self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                       struct.calcsize("3i")))
            if uid != self.peer_uid:
                self.sock.close()
                raise OSError(f"{self.unix_path} is served by uid {uid}, not by the app's account ({self.peer_uid})")


HTTP_ERRORS = (OSError, ValueError, http.client.HTTPException)


def get(where: str | int, path: str, timeout: float = 5, peer_uid: int | None = None) -> tuple[int, bytes]:
    """GET PATH on the app at WHERE (a port on 127.0.0.1, or a unix socket's path); (status,
    body). Raises one of HTTP_ERRORS when nothing answers."""
    if isinstance(where, int):
        conn = http.client.HTTPConnection("127.0.0.1", where, timeout=timeout)
    else:
        conn = UnixHTTPConnection(where, timeout=timeout, peer_uid=peer_uid)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def healthz(where: str | int, peer_uid: int | None = None) -> dict:
    status, body = get(where, "/healthz", peer_uid=peer_uid)
    if status != 200:
        raise OSError(f"HTTP {status}")
    return json.loads(body)


def check_paths(where: str | int, paths: list[str], timeout: float = 30, peer_uid: int | None = None) -> str | None:
    """Each path must answer, and not with a 5xx (a redirect or a 404 is the app's own
    answer); what failed, in one line, or None."""
    for path in paths:
        try:
            status, _ = get(where, path, timeout=timeout, peer_uid=peer_uid)
        except HTTP_ERRORS as exc:
            return f"GET {path} got no answer ({exc or type(exc).__name__})"
        if status >= 500:
            return f"GET {path} answered {status}"
    return None


def wait_healthy(where: str | int, release: str | None, wait: float, interval: float = 0.05,
                 pidfile: Path | None = None, releases: Path | None = None, pidfile_grace: float = 10,
                 alive=None, peer_uid: int | None = None, tick=None) -> tuple[bool, str]:
    """The one poller of a boot: until /healthz says "ok" (and, with RELEASE, names it) or
    WAIT seconds pass; (healthy, the last answer). With PIDFILE, only while the master
    named there runs, giving up once that master has come and gone (gunicorn halts by
    itself when a worker cannot boot) or has not written its pidfile within PIDFILE_GRACE
    seconds (it does so before it loads the app). With ALIVE, a function, once it is false.
    TICK, a function, runs every INTERVAL; it says when to poll."""
    started = time.monotonic()
    deadline = started + wait
    last, seen = "no answer", False
    while True:
        if alive is not None and not alive():
            return False, f"{last}; the process exited"
        if pidfile is not None:
            if master_pid(pidfile, releases):
                seen = True
            elif seen or time.monotonic() > started + pidfile_grace:
                return False, f"{last}; no master in {pidfile}" + (" (it exited)" if seen else "")
            else:
                time.sleep(interval)
                continue
        if tick is not None and not tick():
            if time.monotonic() >= deadline:
                return False, last
            time.sleep(interval)
            continue
        try:
            answer = healthz(where, peer_uid)
            last = json.dumps(answer)
            if answer.get("status") == "ok" and release in (None, answer.get("release")):
                return True, last
        except HTTP_ERRORS as exc:
            last = f"no answer ({exc})"
        if time.monotonic() >= deadline:
            return False, last
        time.sleep(interval)


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0
