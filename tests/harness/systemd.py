"""Real Debian servers with systemd as PID 1, booted for the tests (root only, stdlib only).

    reason = unavailable()                      # None, or why no server can boot here
    with SystemdServer(tmp_path, "srv1", index=1, suite="bookworm") as server:
        server.ssh_opts, server.alias           # SSH_OPTS / REMOTE_HOST, host-key checking on
        server.address                          # 10.231.<index>.2, reachable from here
        server.ssh("systemctl is-system-running", user="deploy")
        server.reboot()                         # `systemctl reboot` inside; boots again

A rootfs is made once per Debian suite with `debootstrap --variant=minbase` and cached
outside the repository (CFD_ROOTFS_CACHE, default /var/cache/cfd-test/rootfs), from the
Debian mirror this machine's apt uses (debian_mirror(); CFD_DEBIAN_MIRROR overrides it). Each
server is an overlayfs over it (its changes live in the test's tmp dir), in a network
namespace of its own joined to this machine by a veth pair (10.231.<index>.1 here,
.2 there), booted by `systemd-nspawn --boot`. An ordinary user `deploy` (lingering on,
so its user manager starts at boot) and root both log in with the test key.

Pitfalls seen on these machines (see shared/recipes/systemd-host.sh): nspawn needs
--register=no --keep-unit without a host systemd; the runner moves itself into a
cgroup of its own first, or every guest lands in the same /payload cgroup;
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 gives the guest a clean cgroup v2 tree; a reboot
inside makes nspawn exit 133, and the runner boots it again, as systemd-nspawn@.service does.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

CACHE = Path(os.environ.get("CFD_ROOTFS_CACHE", "/var/cache/cfd-test/rootfs"))
APT_DIR = Path("/etc/apt")
PACKAGES = ("systemd,systemd-sysv,dbus,openssh-server,python3,python3-venv,iproute2,procps,"
            "libpam-systemd,dbus-user-session")
# A server at the edge (tests/test_https.py): nginx, certbot and sudo, in the rootfs since the
# servers have no network. Bookworm's debootstrap does not resolve the virtual package
# python3-cryptography needs (python3-cffi-backend-api-*): name the backend.
EDGE_PACKAGES = {"bookworm": "nginx,certbot,sudo,python3-cffi-backend", "trixie": "nginx,certbot,sudo"}
USER = "deploy"
CGROUP_ROOTS = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified")

# The runner: its own cgroup, then boot; exit 133 means the guest rebooted: boot it again.
RUNNER = r"""
set -u
if [ -d /sys/fs/cgroup/unified ] || [ -d /sys/fs/cgroup/systemd ]; then
    for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
        [ -d "$h" ] && mkdir -p "$h/$CG" && echo $$ >"$h/$CG/cgroup.procs"
    done
else
    mkdir -p "/sys/fs/cgroup/$CG" && echo $$ >"/sys/fs/cgroup/$CG/cgroup.procs"
fi
while :; do
    echo "=== boot $(date +%s%N)"
    systemd-nspawn -D "$ROOT" --boot --machine="$NAME" --network-namespace-path="/run/netns/$NETNS" \
        --register=no --keep-unit --console=read-only &
    echo $! >"$DIR/nspawn.pid"
    rc=0; wait $! || rc=$?
    echo "=== nspawn exited rc=$rc"
    [ "$rc" -eq 133 ] || break
done
rm -f "$DIR/nspawn.pid"
"""


def _run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, stdin=subprocess.DEVNULL, **kw)


def unavailable() -> str | None:
    """Why systemd servers cannot boot here, or None."""
    if os.geteuid() != 0:
        return "booting systemd servers needs root (nspawn, overlayfs, network namespaces)"
    for tool, package in (("debootstrap", "debootstrap"), ("systemd-nspawn", "systemd-container"),
                          ("ip", "iproute2"), ("ssh", "openssh-client")):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            return f"`{tool}` is not installed (apt-get install {package})"
    return None


def apt_deb_uris(name: str, text: str) -> list[str]:
    """The URIs of the `deb` entries (not deb-src) of one apt sources file, in order: the
    one-line format of *.list (`deb [options] URI suite components`), or deb822 for
    *.sources (paragraphs with `Types:` and `URIs:`; `Enabled: no` skips one)."""
    uris: list[str] = []
    if name.endswith(".sources"):
        for paragraph in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            key = None
            for line in paragraph.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                if line[0] in " \t" and key:  # a continuation line
                    fields[key] += " " + line.strip()
                elif ":" in line:
                    key, _, value = line.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no":
                uris += fields.get("uris", "").split()
        return uris
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(maxsplit=1)
        if len(words) < 2 or words[0] != "deb":
            continue
        rest = words[1].strip()
        if rest.startswith("["):  # options: [arch=amd64 signed-by=…], spaces allowed inside
            rest = rest.partition("]")[2]
        if rest.split():
            uris.append(rest.split()[0])
    return uris


def debian_mirror(apt_dir: Path = APT_DIR) -> str:
    """The first `deb` URI of this machine's apt sources whose path ends in /debian (the
    archive itself, not debian-security or a third party's repository), read in apt's own
    order: sources.list, then sources.list.d/*.list and *.sources by name."""
    listed = apt_dir / "sources.list.d"
    files = [apt_dir / "sources.list", *sorted(
        (p for p in listed.glob("*") if p.suffix in (".list", ".sources")), key=lambda p: p.name)]
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:  # absent or unreadable: apt would not use it either
            continue
        for uri in apt_deb_uris(path.name, text):
            if urlsplit(uri).path.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    raise RuntimeError(
        f"no Debian mirror to debootstrap from: no `deb` entry whose URI ends in /debian in "
        f"{', '.join(map(str, files))} (apt's sources.list, then {listed}/*.list and *.sources); "
        "set CFD_DEBIAN_MIRROR to one")


def rootfs_key(suite: str, extra: str = "") -> str:
    """The cache's name for SUITE's rootfs with EXTRA packages (comma-separated): the suite's
    name for the base list (as before: caches made then stay valid), else the suite and a
    hash of the whole list, so that a rootfs is never reused for another list."""
    if not extra:
        return suite
    packages = ",".join(sorted(set(PACKAGES.split(",")) | set(extra.split(","))))
    return f"{suite}-{hashlib.sha256(packages.encode()).hexdigest()[:12]}"


def rootfs(suite: str, extra: str = "") -> Path:
    """The cached rootfs of a Debian suite with EXTRA packages, made once (about a minute
    for the base list) and shared."""
    key = rootfs_key(suite, extra)
    base = CACHE / key
    if (base / "usr/lib/systemd/systemd").exists():
        return base
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{key}.lock", "w") as lock:  # parallel test workers build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (base / "usr/lib/systemd/systemd").exists():
            return base
        tmp = CACHE / f"{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        mirror = os.environ.get("CFD_DEBIAN_MIRROR") or debian_mirror()
        include = PACKAGES + ("," + extra if extra else "")
        made = _run("debootstrap", "--variant=minbase", f"--include={include}", suite, str(tmp), mirror,
                    check=False)
        if made.returncode != 0:
            raise RuntimeError(f"debootstrap {suite} failed:\n{made.stdout[-2000:]}\n{made.stderr[-2000:]}")
        _run("chroot", str(tmp), "apt-get", "clean")
        tmp.rename(base)
    return base


class SystemdServer:
    def __init__(self, base: Path, name: str, index: int, suite: str = "bookworm", extra: str = "") -> None:
        if not 1 <= index <= 250:
            raise ValueError("index between 1 and 250")
        self.base = Path(base).resolve()
        self.name, self.index, self.suite, self.extra = name, index, suite, extra
        tag = os.getpid() % 100000
        self.netns = f"cfdsd{tag}s{index}"
        self.veth = f"cfdsv{tag}s{index}"
        self.cgroup = f"cfd-nspawn-{tag}-{index}"
        self.address = f"10.231.{index}.2"
        self.gateway = f"10.231.{index}.1"
        self.alias = name
        self.dir = self.base / name
        self.root = self.dir / "root"
        self.key = self.base / "client_key"
        self.known_hosts = self.dir / "known_hosts"
        self.ssh_config = self.dir / "ssh_config"
        self._runner: subprocess.Popen[bytes] | None = None

    @property
    def ssh_opts(self) -> str:
        return f"-F {shlex.quote(str(self.ssh_config))}"

    # --- the guest's disk ----------------------------------------------------------------

    def _prepare(self) -> None:
        lower = rootfs(self.suite, self.extra)
        for sub in ("upper", "work", "root"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        if not self.key.exists():
            _run("ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", str(self.key))
        if not os.path.ismount(self.root):
            _run("mount", "-t", "overlay", "overlay", "-o",
                 f"lowerdir={lower},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}", str(self.root))
        if (self.dir / "upper" / "etc" / "machine-id").exists():
            return
        # First boot: an identity, host keys and logins of its own.
        (self.root / "etc/machine-id").write_text(open("/proc/sys/kernel/random/uuid").read().replace("-", ""))
        (self.root / "etc/hostname").write_text(f"{self.name}\n")
        (self.root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {self.name}\n")
        for key in (self.root / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        _run("ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", str(self.root / "etc/ssh/ssh_host_ed25519_key"))
        if _run("chroot", str(self.root), "id", USER, check=False).returncode != 0:
            _run("chroot", str(self.root), "useradd", "-m", "-s", "/bin/bash", USER)
        public = Path(f"{self.key}.pub").read_text()
        for home, owner in (("root", "0:0"), (f"home/{USER}", f"{USER}:{USER}")):
            ssh_dir = self.root / home / ".ssh"
            ssh_dir.mkdir(mode=0o700, exist_ok=True)
            (ssh_dir / "authorized_keys").write_text(public)
            _run("chroot", str(self.root), "chown", "-R", owner, f"/{home}/.ssh")
        # Lingering: the user's manager starts at boot, with nobody logged in.
        linger = self.root / "var/lib/systemd/linger"
        linger.mkdir(parents=True, exist_ok=True)
        (linger / USER).touch()
        host_key = (self.root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"{self.address} {' '.join(host_key)}\n")
        self.ssh_config.write_text("\n".join([
            f"Host {self.alias}", f"  HostName {self.address}", "  User root",
            f"  IdentityFile {self.key}", "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {self.known_hosts}", "  StrictHostKeyChecking yes",
            "  BatchMode yes", "  ConnectTimeout 3", "  LogLevel ERROR", "",
        ]))

    # --- network ---------------------------------------------------------------------------

    def _network(self) -> None:
        if self.netns in _run("ip", "netns", "list").stdout.split():
            return
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "host0", "netns", self.netns)
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.veth)
        _run("ip", "link", "set", self.veth, "up")
        _run("ip", "-n", self.netns, "addr", "add", f"{self.address}/24", "dev", "host0")
        _run("ip", "-n", self.netns, "link", "set", "host0", "up")
        _run("ip", "-n", self.netns, "link", "set", "lo", "up")

    # --- boot, reboot, stop ------------------------------------------------------------------

    def start(self) -> SystemdServer:
        try:
            self._prepare()
            self._network()
            self.boot()
        except BaseException:
            self.stop()
            raise
        return self

    def boot(self, timeout: float = 60) -> float:
        """Start the runner (it boots the guest) and wait for ssh; returns seconds to ssh."""
        started = time.monotonic()
        env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1", "ROOT": str(self.root),
               "NAME": self.name, "NETNS": self.netns, "DIR": str(self.dir), "CG": self.cgroup}
        with open(self.dir / "console.log", "ab") as log:
            self._runner = subprocess.Popen(["sh", "-c", RUNNER], env=env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log, start_new_session=True)
        self.wait_for_ssh(started + timeout)
        return time.monotonic() - started

    def wait_for_ssh(self, deadline: float) -> None:
        while self.ssh("true", timeout=5, check=False).returncode != 0:
            if time.monotonic() > deadline or (self._runner is not None and self._runner.poll() is not None):
                tail = (self.dir / "console.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} ({self.suite}) did not answer ssh; console:\n{tail}")
            time.sleep(0.2)

    def ssh(self, command: str, user: str = "root", timeout: float = 60, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["ssh", "-F", str(self.ssh_config), "-l", user, self.alias, command],
                                capture_output=True, text=True, timeout=timeout, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"ssh {user}@{self.name} {command!r} failed ({result.returncode}):\n"
                                 f"{result.stdout}{result.stderr}")
        return result

    def guest_init(self) -> int | None:
        """The pid (here) of the guest's PID 1."""
        try:
            nspawn = int((self.dir / "nspawn.pid").read_text())
        except (OSError, ValueError):
            return None
        children = _run("pgrep", "-P", str(nspawn), check=False).stdout.split()
        return int(children[0]) if children else None

    def reboot(self, timeout: float = 60) -> float:
        """`systemctl reboot` inside; returns seconds from the command to ssh answering again."""
        started = time.monotonic()
        init = self.guest_init()
        self.ssh("systemctl reboot", check=False, timeout=10)
        while init is not None and self.guest_init() == init and time.monotonic() < started + timeout:
            time.sleep(0.05)  # the old boot is going down
        self.wait_for_ssh(started + timeout)
        return time.monotonic() - started

    def stop(self) -> None:
        """Power off (TERM to nspawn: an orderly shutdown), KILL after 30 s; unmount; remove
        the namespace and cgroups. Idempotent."""
        runner = self._runner
        if runner is not None and runner.poll() is None:
            try:
                nspawn = int((self.dir / "nspawn.pid").read_text())
                os.kill(nspawn, signal.SIGTERM)
            except (OSError, ValueError):
                pass
            try:
                runner.wait(30)
            except subprocess.TimeoutExpired:
                if (init := self.guest_init()) is not None:
                    os.kill(init, signal.SIGKILL)
                os.killpg(runner.pid, signal.SIGKILL)
                runner.wait(10)
        self._runner = None
        if os.path.ismount(self.root):
            _run("umount", str(self.root), check=False)
        _run("ip", "netns", "del", self.netns, check=False)  # takes the veth pair with it
        for root in (*CGROUP_ROOTS, "/sys/fs/cgroup"):
            group = Path(root) / self.cgroup
            if group.is_dir():
                for sub in sorted(group.rglob("*"), key=lambda p: -len(p.parts)):
                    if sub.is_dir():
                        try:
                            sub.rmdir()
                        except OSError:
                            pass
                try:
                    group.rmdir()
                except OSError:
                    pass

    def __enter__(self) -> SystemdServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def link(first: SystemdServer, second: SystemdServer) -> None:
    """Let two running servers reach each other at their own addresses (a proxy host and the
    hosts behind it): a veth pair straight between their namespaces, with a route to the other's
    address over it; and each reaches the other's gateway (this machine's address on the other's
    pair: an ACME CA listening there) through its own, which this machine delivers locally.
    Nothing on this machine changes (no forwarding, no routes here), and all of it goes with
    the namespaces when the servers stop."""
    a, b = f"cfdl{first.index}", f"cfdl{second.index}"  # each end named after the server it leads to
    _run("ip", "-n", first.netns, "link", "add", b, "type", "veth", "peer", "name", a, "netns", second.netns)
    for server, other, device in ((first, second, b), (second, first, a)):
        _run("ip", "-n", server.netns, "link", "set", device, "up")
        _run("ip", "-n", server.netns, "route", "add", f"{other.address}/32", "dev", device, "src", server.address)
        _run("ip", "-n", server.netns, "route", "add", f"{other.gateway}/32", "via", server.gateway)
