"""Ask a running release for /healthz, over TCP or a unix socket; used by remote.sh.

With --paths, asks each of those paths once instead (the smoke test of a release's pages).
Otherwise prints the JSON answer and exits 0 when it says "ok" (and, with --release, names that
release); retries every --interval until --wait seconds have passed: remote.sh's one
poller for a boot. With --pidfile it succeeds only while the gunicorn master named there
runs, and gives up as soon as that master has come and gone (gunicorn halts by itself when
a worker cannot boot) or has not written its pidfile within --pidfile-grace seconds (it
does so before it loads the app); with --watch-pid, once that process has exited.
Standard library only: it runs with the host's python3.
"""
from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import time


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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument("--unix")
    parser.add_argument("--release", help="succeed only when this release answers")
    parser.add_argument("--wait", type=float, default=0, help="keep trying for this many seconds")
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--pidfile", help="only while the master in this pidfile runs")
    parser.add_argument("--master", default="/releases/", help="a master's command line holds this")
    parser.add_argument("--pidfile-grace", type=float, default=10)
    parser.add_argument("--watch-pid", type=int, help="give up once this process has exited")
    parser.add_argument("--paths", help="instead of /healthz: GET each of these (spaced), none may fail or 5xx")
    parser.add_argument("--path-timeout", type=float, default=30)
    args = parser.parse_args()
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


if __name__ == "__main__":
    sys.exit(main())
