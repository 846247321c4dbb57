"""A private OpenSSH server on 127.0.0.1 for deploy tests (stdlib only).

    with PrivateSshd(tmp_path / "sshd") as host:
        subprocess.run(["ssh", *host.ssh_opts.split(), host.host_alias, "true"])

CLI for demos: ``python tests/harness/sshd.py start DIR`` / ``python tests/harness/sshd.py stop DIR``
(stdlib only and no package imports, so it runs as a plain script).
Set SSHD_BIN to use another sshd binary.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"
SFTP_SERVERS = (
    "/usr/lib/openssh/sftp-server",  # Debian, Ubuntu
    "/usr/libexec/openssh/sftp-server",  # Fedora, RHEL
    "/usr/lib/ssh/sftp-server",  # Arch
    "/usr/libexec/sftp-server",  # macOS, BSD
)
INSTALL_HINT = "sshd not found: install it with `apt-get install openssh-server`."


def find_sshd() -> str | None:
    if env := os.environ.get("SSHD_BIN"):
        return env if os.access(env, os.X_OK) else None
    return shutil.which("sshd", path=os.environ.get("PATH", "") + ":" + SBIN_PATH)


def host_path() -> str:
    """PATH for the suite's hosts and baked projects: the directory of the interpreter behind
    this one first, so `python3` there is a real Python. A pyenv shim (a bash script that
    asks pyenv which Python to run) costs about 0.3 s of wall time at every start."""
    first = str(Path(getattr(sys, "_base_executable", sys.executable)).resolve().parent)
    rest = [d for d in (os.environ.get("PATH") or "/usr/bin:/bin").split(":") if d and d != first]
    return ":".join([first, *rest])


def python_host_env(version: str) -> dict[str, str]:
    """Login variables that make `python3` on a private sshd host that pyenv version, e.g.
    "3.12". The login shell must put pyenv's shims on PATH (root's does on these machines);
    raises, naming the missing piece, when this machine cannot."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = sorted(p.name for p in (root / "versions").glob(f"{version}.*")) if root.is_dir() else []
    if not found:
        raise RuntimeError(f"no pyenv Python {version} under {root}/versions: install it (pyenv install {version})")
    bin_dir = root / "versions" / found[-1] / "bin"
    # PYENV_VERSION steers the shims; PATH too, for a login shell without them.
    return {"PYENV_VERSION": found[-1], "PATH": f"{bin_dir}:{host_path()}"}


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORTS_BELOW = _ephemeral_low()
_PORTS_PER_WORKER = 1500
_PORT_LOCKS = Path(os.environ.get("TMPDIR", "/tmp")) / "cfd-ports"  # shared by every test run here
_held: list[int] = []  # the lock files of the ports this process was given, open till it exits
_next_port = 0


def _claim(port: int) -> bool:
    """Hold PORT's lock file for this process's life: two test runs on one machine (or a
    harness CLI started by a test) never pick the same port. False when another holds it."""
    try:
        if not _PORT_LOCKS.is_dir():
            _PORT_LOCKS.mkdir(exist_ok=True)
            os.chmod(_PORT_LOCKS, 0o1777)  # every account's test runs share it (umask aside)
        fd = os.open(_PORT_LOCKS / str(port), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError:
        return True  # no shared folder to coordinate in: the bind check alone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _held.append(fd)
    return True


def free_port() -> int:
    """A port nothing listens on, below the kernel's ephemeral range: a port the kernel hands
    out could meanwhile be any ssh or HTTP client's own end and fail a server's bind later
    (gunicorn's "Connection in use"). Each xdist worker takes its own slice, in turn, and
    holds a lock per port (_claim), so neither two workers nor two runs pick the same port;
    a port is checked on every address, as servers bind."""
    global _next_port
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    first = _PORTS_BELOW - _PORTS_PER_WORKER * (1 + (int(worker) if worker.isdigit() else 0) % 8)
    for _ in range(_PORTS_PER_WORKER):
        port = first + _next_port % _PORTS_PER_WORKER
        _next_port += 1
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        if _claim(port):
            return port
    raise RuntimeError(f"no free port in {first}–{first + _PORTS_PER_WORKER - 1}")


def _is_sshd(pid: int) -> bool:
    try:
        return b"sshd" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _terminate(pid: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    """TERM, wait up to 5 s, then KILL. Without proc, pid must be checked as sshd."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc is None and not _is_sshd(pid):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if proc is not None:
            try:
                proc.wait(5)
                return
            except subprocess.TimeoutExpired:
                continue
        deadline = time.monotonic() + 5
        while _is_sshd(pid) and time.monotonic() < deadline:  # a zombie has no cmdline
            time.sleep(0.05)


class PrivateSshd:
    def __init__(self, base: Path, host_alias: str = "deploy-test-host", listen: str = "127.0.0.1",
                 prefix: list[str] | None = None, login_env: dict[str, str] | None = None,
                 log_level: str = "ERROR") -> None:
        """listen: the address sshd binds; prefix: a command sshd runs under (e.g. `ip netns
        exec NS ...`, see harness/netns.py), which must exec sshd so that its pid is sshd's;
        login_env: variables every login gets (authorized_keys `environment=`), e.g.
        PYENV_VERSION to give the host a python3 of another version (see python_host_env)."""
        self.base = Path(base).resolve()
        self.host_alias = host_alias
        self.listen = listen
        self.prefix = list(prefix or [])
        self.login_env = dict(login_env or {})
        self.log_level = log_level  # INFO logs each login ("Accepted publickey"): the bench counts them
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    # paths
    @property
    def identity(self) -> Path:
        return self.base / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.base / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.base / "ssh_config"

    @property
    def pidfile(self) -> Path:
        return self.base / "sshd.pid"

    @property
    def log(self) -> Path:
        return self.base / "sshd.log"

    @property
    def ssh_opts(self) -> str:
        """What to pass as SSH_OPTS: ssh and scp both take -F."""
        return f"-F {shlex.quote(str(self.ssh_config))}"

    def _keygen(self, path: Path) -> None:
        if not path.exists():
            subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", str(path)],
                           check=True, stdin=subprocess.DEVNULL)

    def _write_files(self) -> Path:
        b = self.base
        b.mkdir(parents=True, exist_ok=True)
        self._keygen(b / "host_key")
        self._keygen(self.identity)
        options = ",".join(f'environment="{k}={v}"' for k, v in self.login_env.items())
        (b / "authorized_keys").write_text(f"{options} " * bool(options) + Path(f"{self.identity}.pub").read_text())
        sftp = next((p for p in SFTP_SERVERS if os.access(p, os.X_OK)), "internal-sftp")
        root = os.geteuid() == 0
        if root:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        config = b / "sshd_config"
        config.write_text("\n".join([
            f"ListenAddress {self.listen}", f"Port {self.port}",
            f"HostKey {b / 'host_key'}", f"PidFile {self.pidfile}",
            f"AuthorizedKeysFile {b / 'authorized_keys'}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "UsePAM no", "StrictModes no",
            f"Subsystem sftp {sftp}",
            *(["PermitRootLogin prohibit-password"] if root else []),
            *(["PermitUserEnvironment yes"] if self.login_env else []),
            f"AllowUsers {self.user}", f"LogLevel {self.log_level}", "PrintMotd no",
            # Our PATH, and no ~/.bashrc: Debian's bash runs it for every ssh command unless
            # SHLVL says it is nested, and a developer's (pyenv init here) cost a quarter of
            # a second a login. The host finds the commands we find, as that rc file gave it;
            # a login_env PATH (another Python) is the whole PATH.
            f'SetEnv SHLVL=1 "PATH={self.login_env.get("PATH") or host_path()}"',
            "MaxStartups 100:30:200", "MaxSessions 50", "",
        ]))
        host_pub = Path(b / "host_key.pub").read_text().split()[:2]
        names = f"[{self.listen}]:{self.port},[{self.host_alias}]:{self.port},{self.host_alias}"
        self.known_hosts.write_text(f"{names} {' '.join(host_pub)}\n")
        self.ssh_config.write_text("\n".join([
            f"Host {self.host_alias}", f"  HostName {self.listen}", f"  Port {self.port}",
            f"  User {self.user}", f"  IdentityFile {self.identity}", "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {self.known_hosts}", "  BatchMode yes",
            "  ConnectTimeout 5", "",
        ]))
        return config

    def start(self, detach: bool = False) -> PrivateSshd:
        """Start sshd and wait until it accepts connections. With detach, it outlives us."""
        sshd_bin = find_sshd()
        if sshd_bin is None:
            raise RuntimeError(INSTALL_HINT)
        self.port = free_port()
        config = self._write_files()
        self.pidfile.unlink(missing_ok=True)
        with open(self.log, "wb") as log:
            self._proc = subprocess.Popen(
                [*self.prefix, sshd_bin, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, start_new_session=detach)
        # sshd writes its pidfile right after listen(): the port then accepts connections.
        # (Probing with connect() instead would log "kex_exchange_identification" errors.)
        deadline = time.monotonic() + 10
        while not (self.pidfile.exists() and self.pidfile.read_text().strip()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"sshd did not come up on port {self.port}; log:\n{tail}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop sshd (TERM, KILL after 5 s). Idempotent; works from the pidfile too."""
        if self._proc is not None:
            _terminate(self._proc.pid, self._proc)
            self._proc = None
        elif self.pidfile.exists():
            _terminate(int(self.pidfile.read_text().split()[0]))
        self.pidfile.unlink(missing_ok=True)

    def run(self, cmd: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the host through ssh with our config."""
        return subprocess.run(["ssh", "-F", str(self.ssh_config), self.host_alias, cmd],
                              capture_output=True, text=True, check=check, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def __enter__(self) -> PrivateSshd:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python tests/harness/sshd.py start|stop DIR", file=sys.stderr)
        return 64
    host = PrivateSshd(Path(argv[1]))
    host.stop()  # a start replaces a previous sshd in DIR
    if argv[0] == "stop":
        return 0
    if find_sshd() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    try:
        host.start(detach=True)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    env = (f"SSH_OPTS={shlex.quote(host.ssh_opts)}\nREMOTE_HOST={host.host_alias}\n"
           f"SSH_PORT={host.port}\n")
    (host.base / "sshd.env").write_text(env)
    print(env, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
