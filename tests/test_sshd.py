"""Real tests of tests/harness/sshd.py against OpenSSH (no mocks)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import missing  # noqa: E402
from harness.app import port_open  # noqa: E402
from harness.sshd import PrivateSshd, find_sshd  # noqa: E402

SSHD_PY = Path(__file__).parent / "harness" / "sshd.py"  # also a CLI: a plain script
@pytest.fixture(autouse=True)
def openssh() -> None:
    if find_sshd() is None or shutil.which("ssh") is None:
        missing("OpenSSH server/client not installed (apt-get install openssh-server openssh-client)")


def sh(*cmd: str | Path, cwd: Path | None = None,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL, cwd=cwd, env=env)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[PrivateSshd]:
    with PrivateSshd(tmp_path / "sshd") as h:
        yield h


def test_ssh_with_host_key_checking_on(host: PrivateSshd) -> None:
    cmd = ["ssh", *shlex.split(host.ssh_opts), host.host_alias, "echo ok; whoami"]
    assert "StrictHostKeyChecking" not in " ".join(cmd) + host.ssh_config.read_text()
    effective = sh("ssh", *shlex.split(host.ssh_opts), "-G", host.host_alias).stdout
    assert "stricthostkeychecking ask" in effective  # the default; BatchMode makes it refuse
    r = sh(*cmd)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", host.user]
    assert host.run("true").returncode == 0


def test_scp_copies_file(host: PrivateSshd, tmp_path: Path) -> None:
    src, dst = tmp_path / "src.txt", tmp_path / "copied.txt"
    src.write_text("payload\n")
    r = sh("scp", *shlex.split(host.ssh_opts), src, f"{host.host_alias}:{dst}")
    assert r.returncode == 0, r.stderr
    assert dst.read_text() == "payload\n"


def test_wrong_host_key_is_refused(host: PrivateSshd, tmp_path: Path) -> None:
    sh("ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", tmp_path / "other")
    other = (tmp_path / "other.pub").read_text().split()[:2]
    host.known_hosts.write_text(f"[127.0.0.1]:{host.port} {' '.join(other)}\n")
    r = host.run("true")
    assert r.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in r.stderr


def listening(port: int) -> bool:
    """A socket listens on PORT (from /proc/net/tcp*: a connect to a closed loopback port can
    succeed when the kernel picks that very port as its source, and connect to itself)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                return True
    return False


def test_stop_closes_port_and_is_idempotent(tmp_path: Path) -> None:
    h = PrivateSshd(tmp_path).start()
    assert port_open(h.port) and listening(h.port)
    h.stop()
    h.stop()
    assert not listening(h.port)
    assert not h.pidfile.exists()


def test_failed_start_reports_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake-sshd"
    fake.write_text("#!/bin/sh\necho boom-from-sshd >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SSHD_BIN", str(fake))
    with pytest.raises(RuntimeError, match="(?s)did not come up.*boom-from-sshd"):
        PrivateSshd(tmp_path / "sshd").start()


def test_cli_without_sshd_says_how_to_install(tmp_path: Path) -> None:
    r = sh(sys.executable, SSHD_PY, "start", tmp_path,
           env={**os.environ, "SSHD_BIN": "/nonexistent/sshd"})
    assert r.returncode == 2
    assert "apt-get install openssh-server" in r.stderr and "Traceback" not in r.stderr


def test_cli_as_ordinary_user() -> None:
    """Start/stop through the CLI as an unprivileged user: no privsep, logs in as itself."""
    user, py = "deploytest", "/usr/bin/python3"
    if os.geteuid() != 0:
        missing("needs root to create and switch to a test user: run the tests as root (CI does)")
    if not (shutil.which("runuser") and shutil.which("useradd") and os.access(py, os.X_OK)):
        missing("needs runuser, useradd and /usr/bin/python3: apt-get install util-linux passwd python3")
    if sh("id", user).returncode != 0:
        assert sh("useradd", "-m", user).returncode == 0
    work = Path(tempfile.mkdtemp(prefix="sshd-user-"))
    try:
        shutil.copy(SSHD_PY, work / "sshd.py")
        (work / "src.txt").write_text("payload\n")
        shutil.chown(work, user)
        as_user = ("runuser", "-u", user, "--")
        r = sh(*as_user, py, work / "sshd.py", "start", work / "s", cwd=work)
        assert r.returncode == 0, r.stderr
        env = dict(line.split("=", 1) for line in (work / "s/sshd.env").read_text().splitlines())
        opts, alias = shlex.split(shlex.split(env["SSH_OPTS"])[0]), env["REMOTE_HOST"]
        r = sh(*as_user, "ssh", *opts, alias, "whoami")
        assert (r.returncode, r.stdout.strip()) == (0, user), r.stderr
        r = sh(*as_user, "scp", *opts, work / "src.txt", f"{alias}:{work}/dst.txt")
        assert r.returncode == 0 and (work / "dst.txt").read_text() == "payload\n", r.stderr
        assert sh(*as_user, py, work / "sshd.py", "stop", work / "s").returncode == 0
        assert not port_open(int(env["SSH_PORT"]))
    finally:
        PrivateSshd(work / "s").stop()  # no-op unless the test failed midway
        shutil.rmtree(work, ignore_errors=True)
