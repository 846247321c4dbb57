"""Several real hosts on one machine, for rolling-deploy tests (root only, stdlib only).

    reason = unavailable()            # None, or why these hosts cannot be made here
    with NamespaceHosts(tmp_path, count=3) as hosts:
        hosts.ssh_opts                # SSH_OPTS: one ssh config naming every host
        hosts.remote_dir              # REMOTE_DIR: the same path on every host...
        hosts[0].dir                  # ...showing each host its own directory
        hosts[0].alias, hosts[0].address

Each host is a network namespace with its own address on a bridge in the root namespace
(10.213.0.1/24; host N is 10.213.0.1N, `lo` up) and its own sshd listening on that
address. sshd runs in a private mount namespace in which the host's own directory is
bind-mounted over `remote_dir`, so every process that logs in there (and every gunicorn
it starts) sees that host's deploy directory. Nothing leaves these namespaces and the
bridge. stop() kills every process left in the namespaces (they are ours: we made the
namespaces), deletes them and the bridge; the mounts go with the last process.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

from .sshd import PrivateSshd, find_sshd

SUBNET = "10.213.0"
GATEWAY = f"{SUBNET}.1"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          stdin=subprocess.DEVNULL)


def unavailable() -> str | None:
    """Why namespace hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (run the tests as root for the several-hosts tests)"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install iproute2 util-linux)"
    if find_sshd() is None:
        return "no sshd binary: apt-get install openssh-server"
    probe = f"cfdprobe{os.getpid()}"
    added = _ip("netns", "add", probe, check=False)
    if added.returncode != 0:
        return f"`ip netns add` is not permitted here: {added.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    taken = _ip("-o", "addr", "show", "to", f"{SUBNET}.0/24", check=False).stdout.strip()
    if taken:
        return f"{SUBNET}.0/24 is already in use on this machine (another test run?): {taken}"
    return None


class NsHost:
    def __init__(self, index: int, tag: str, base: Path, remote_dir: Path,
                 login_env: dict[str, str] | None = None, log_level: str = "ERROR") -> None:
        self.index = index
        self.netns = f"cfd{tag}h{index}"
        self.veth = f"cfdv{tag}h{index}"
        self.alias = f"web{index}"
        self.address = f"{SUBNET}.1{index}"
        self.dir = base / f"web{index}"  # what this host sees at remote_dir
        # ip netns exec: into the namespace; unshare -m: a mount namespace of its own, in
        # which sh bind-mounts this host's directory over remote_dir, then execs sshd.
        prefix = ["ip", "netns", "exec", self.netns, "unshare", "-m", "--propagation", "private",
                  "sh", "-c", 'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh",
                  str(self.dir), str(remote_dir)]
        self.sshd = PrivateSshd(base / f"sshd-web{index}", host_alias=self.alias,
                                listen=self.address, prefix=prefix, login_env=login_env,
                                log_level=log_level)

    def pids(self) -> list[int]:
        out = _ip("netns", "pids", self.netns, check=False).stdout
        return [int(p) for p in out.split() if p.isdigit()]


class NamespaceHosts:
    def __init__(self, base: Path, count: int = 3, login_env: dict[int, dict[str, str]] | None = None,
                 log_level: str = "ERROR") -> None:
        """login_env: by host index (0-based), what its logins get (sshd.python_host_env);
        log_level: each sshd's (INFO logs every login)."""
        if not 1 <= count <= 9:
            raise ValueError("between 1 and 9 hosts")
        self.base = Path(base).resolve()
        tag = str(os.getpid() % 100000)
        self.bridge = f"cfdbr{tag}"
        self.remote_dir = self.base / "remote" / "app"  # empty here; each host mounts its own
        self.hosts = [NsHost(i, tag, self.base, self.remote_dir, (login_env or {}).get(i - 1), log_level)
                      for i in range(1, count + 1)]
        self.ssh_config = self.base / "ssh_config"

    def __getitem__(self, index: int) -> NsHost:
        return self.hosts[index]

    def __iter__(self):
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    @property
    def ssh_opts(self) -> str:
        return f"-F {self.ssh_config}"

    @property
    def aliases(self) -> str:
        return " ".join(h.alias for h in self.hosts)

    def start(self) -> NamespaceHosts:
        try:
            self.remote_dir.mkdir(parents=True, exist_ok=True)
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{GATEWAY}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for host in self.hosts:
                host.dir.mkdir(parents=True, exist_ok=True)
                _ip("netns", "add", host.netns)
                _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
                _ip("link", "set", host.veth, "master", self.bridge, "up")
                _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
                _ip("-n", host.netns, "link", "set", "eth0", "up")
                _ip("-n", host.netns, "link", "set", "lo", "up")
                host.sshd.start()
            self.ssh_config.write_text("".join(h.sshd.ssh_config.read_text() for h in self.hosts))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Idempotent, and as thorough as it can be even after a failed start."""
        for host in self.hosts:
            try:
                host.sshd.stop()
            except Exception:
                pass
            self._kill_all(host)
            _ip("link", "del", host.veth, check=False)  # else it goes later, with the namespace
            _ip("netns", "del", host.netns, check=False)
        _ip("link", "del", self.bridge, check=False)

    @staticmethod
    def _kill_all(host: NsHost) -> None:
        """TERM every process in the host's namespace (all ours), KILL what is left after 10 s."""
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            pids = host.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while host.pids() and time.monotonic() < deadline:
                time.sleep(0.1)

    def __enter__(self) -> NamespaceHosts:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
