"""A throw-away PostgreSQL server for the tests, from the local install's initdb and pg_ctl.

Its data directory is a temporary directory, it listens on 127.0.0.1 only, on a free port,
with trust authentication and fsync off (fast, and nothing in it is worth keeping), and it
is removed when the tests end. Not pytest-postgresql: initdb and pg_ctl refuse to run as
root, and CI runs the tests as root. As root, the server runs as the unprivileged user
`nobody` (runuser, from util-linux); the tests connect to it over TCP either way.
"""
from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import final

INSTALL_HINT = "PostgreSQL not found: apt-get install postgresql"
RUN_AS_WHEN_ROOT = "nobody"


def find_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl: $PG_BIN when set (and then only that), else
    the PATH, else Debian's /usr/lib/postgresql/<version>/bin (the newest), else None."""
    if "PG_BIN" in os.environ:
        candidates = [os.environ["PG_BIN"]]
    else:
        debian = glob.glob("/usr/lib/postgresql/*/bin")
        candidates = [os.path.dirname(shutil.which("pg_ctl") or "")]
        candidates += sorted(debian, key=lambda d: [int(n) for n in re.findall(r"\d+", d)], reverse=True)
    for directory in filter(None, candidates):
        if all(os.access(os.path.join(directory, tool), os.X_OK) for tool in ("initdb", "pg_ctl")):
            return Path(directory)
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@final  # so __enter__ returns exactly this class (ruff PYI034)
class PostgresServer:
    """`with PostgresServer(bin_dir) as server:` server.url("dbname") is a SQLAlchemy URL."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.port = 0
        self.home = Path()
        self.run_as: list[str] = []

    def _run(self, tool: str, *args: str) -> None:
        command = [*self.run_as, str(self.bin_dir / tool), *args]
        result = subprocess.run(command, cwd=self.home, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = self.home / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip()}\n{tail}")

    def __enter__(self) -> PostgresServer:
        root = os.geteuid() == 0
        # As root, somewhere `nobody` can reach: $TMPDIR may be a private directory of root's.
        self.home = Path(tempfile.mkdtemp(prefix="test-postgresql-", dir="/tmp" if root else None))
        if root:
            account = pwd.getpwnam(RUN_AS_WHEN_ROOT)
            os.chown(self.home, account.pw_uid, account.pw_gid)
            self.run_as = ["runuser", "-u", RUN_AS_WHEN_ROOT, "--"]
        try:
            self._run("initdb", "-D", "data", "-U", "postgres", "--auth=trust", "--locale=C", "-E", "UTF8",
                      "--no-sync")
            self.port = free_port()
            options = f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 -c fsync=off"
            self._run("pg_ctl", "-D", "data", "-l", "server.log", "-o", options, "-w", "-t", "60", "start")
        except BaseException:
            shutil.rmtree(self.home, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._run("pg_ctl", "-D", "data", "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.home, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE DATABASE needs that)."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as connection:
            connection.execute(sql)
