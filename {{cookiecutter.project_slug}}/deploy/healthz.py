"""Ask a running release for /healthz, over TCP or a unix socket; used by remote.sh.

Prints the JSON answer and exits 0 when it says "ok" (and, with --release, names that
release); retries until --wait seconds have passed. Standard library only: it runs
with the host's python3.
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


def ask(args: argparse.Namespace) -> dict:
    if args.unix:
        conn: http.client.HTTPConnection = UnixHTTPConnection(args.unix, timeout=5)
    else:
        conn = http.client.HTTPConnection(args.host, args.port, timeout=5)
    try:
        conn.request("GET", "/healthz", headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise OSError(f"HTTP {response.status}")
    return json.loads(body)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument("--unix")
    parser.add_argument("--release", help="succeed only when this release answers")
    parser.add_argument("--wait", type=float, default=0, help="keep trying for this many seconds")
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait
    last = "no answer"
    while True:
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
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
