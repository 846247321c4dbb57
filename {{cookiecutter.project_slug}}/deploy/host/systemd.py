"""systemd: how the app runs on this host (a user unit, a system unit under the app's own
account, or a detached gunicorn where neither works), and the text of its units."""
import hashlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from host import DIST


@dataclass(frozen=True)
class Service:
    """kind: "user", "system" or "daemon"; why: in daemon mode, why not systemd."""
    kind: str
    unit: str
    app_user: str
    why: str = ""

    @property
    def systemctl(self) -> list[str]:
        return ["systemctl", "--user"] if self.kind == "user" else ["systemctl"]

    @property
    def unit_dir(self) -> Path:
        if self.kind == "user":
            return Path.home() / ".config" / "systemd" / "user"
        return Path("/etc/systemd/system")

    @property
    def as_app(self) -> list[str]:
        """The prefix that runs a command as the app's account: never the app's code as root."""
        return ["runuser", "-u", self.app_user, "--"] if self.kind == "system" else []

    @staticmethod
    def unit_name(app_dir: Path, env: str) -> str:
        return f"{DIST}-{env}-{hashlib.sha256(str(app_dir).encode()).hexdigest()[:8]}"

    @classmethod
    def detect(cls, app_dir: Path, env: str, host_name: str, unit_only: bool = False) -> "Service":
        """UNIT_ONLY: run by systemd itself, in the unit (nothing to find out)."""
        unit, me = cls.unit_name(app_dir, env), pwd.getpwuid(os.getuid()).pw_name
        if unit_only:
            return cls("unit", unit, me)
        if not Path("/run/systemd/system").is_dir() or not shutil.which("systemctl"):
            return cls("daemon", unit, me, f"{host_name} does not run systemd")
        if os.getuid() == 0:
            return cls("system", unit, app_account(env))
        os.environ.setdefault("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
        if not Path(f"/var/lib/systemd/linger/{me}").exists() and not quiet(["loginctl", "enable-linger", me]):
            return cls("daemon", unit, me, f"lingering is off for {me}, so a user service would not start at boot; "
                                           f"to fix: sudo loginctl enable-linger {me}")
        if not quiet(["systemctl", "--user", "show-environment"]):
            return cls("daemon", unit, me, f"{me} has no systemd user manager here (install libpam-systemd, "
                                           "then log in again)")
        return cls("user", unit, me)


def app_account(env: str) -> str:
    """The system account a root deploy runs ENV's app as: one per environment, so that two
    on one host never share a file. prod's is the project's name, as before stages were; a
    name over useradd's 32 characters ends in a hash of the environment instead."""
    if env == "prod":
        return DIST[:32]
    name = f"{DIST}-{env}"
    return name if len(name) <= 32 else f"{DIST[:23]}-{hashlib.sha256(env.encode()).hexdigest()[:8]}"


def quiet(command: list[str]) -> bool:
    """Run COMMAND with its output dropped; did it succeed?"""
    try:
        return subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False).returncode == 0
    except OSError:
        return False


@dataclass(frozen=True)
class Units:
    """What the units of one app directory are made of (Service.detect)."""
    dist: str
    env: str
    app_dir: str
    unit: str
    kind: str  # "user" or "system"
    app_user: str
    port: str
    python: str
    log_max_kb: str
    log_keep: str
    boot_timeout: int = 60
    stop_timeout: int = 30
    memory_max_kb: str = ""  # [deploy] memory_max; empty: no limit
    tasks_max: str = ""  # [deploy] tasks_max; empty: systemd's default
    bind_host: str = ""  # several hosts behind the edge: the address the proxy host reaches (checked)
    systemd_version: int = 0  # the host's (RestartSteps= needs 254)

    def common(self) -> list[str]:
        """Who runs it, where, and the sandbox: what every unit of this app shares.

        Both kinds: what needs no privilege (seccomp filters, which NoNewPrivileges allows an
        unprivileged manager to set), and the limits (a user manager has the memory and pids
        controllers delegated). A system unit adds its own account and the namespaces: a
        read-only system, no devices, no kernel knobs, no capabilities. A user manager could
        set those up only in a user namespace of its own, which some hosts refuse (Ubuntu's
        AppArmor restriction, a sysctl): there the unit would not start at all."""
        environment = (f"APP_DIR={self.app_dir} APP_ENV={self.env} PORT={self.port} PYTHON={self.python} "
                       f"LOG_MAX_KB={self.log_max_kb} LOG_KEEP={self.log_keep}"
                       + (f" BIND_HOST={self.bind_host}" if self.bind_host else ""))
        lines = [f"Environment={environment}", "UMask=0077"]
        if self.kind == "system":
            home = "read-only" if self.app_dir.startswith(("/home/", "/root/")) else "yes"
            lines += [f"User={self.app_user}", f"Group={self.app_user}", "NoNewPrivileges=yes", "PrivateTmp=yes",
                      "ProtectSystem=strict", f"ReadWritePaths={self.app_dir}/shared", f"ProtectHome={home}",
                      "PrivateDevices=yes", "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
                      "ProtectKernelLogs=yes", "ProtectControlGroups=yes", "ProtectClock=yes", "ProtectHostname=yes",
                      "ProtectProc=invisible", "CapabilityBoundingSet=", "AmbientCapabilities=", "RemoveIPC=yes"]
        else:  # a system service's keyring is its own already
            lines += ["NoNewPrivileges=yes", "KeyringMode=private"]
        # AF_NETLINK: glibc's getaddrinfo asks the kernel which address families are
        # configured (AI_ADDRCONFIG), e.g. for a PostgreSQL host given by name.
        lines += ["RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK", "RestrictNamespaces=yes",
                  "RestrictRealtime=yes", "RestrictSUIDSGID=yes", "LockPersonality=yes",
                  "SystemCallArchitectures=native", "SystemCallFilter=@system-service",
                  "SystemCallErrorNumber=EPERM"]  # a refused call fails, rather than kill the worker
        if self.memory_max_kb:
            lines.append(f"MemoryMax={self.memory_max_kb}K")
        if self.tasks_max:
            lines.append(f"TasksMax={self.tasks_max}")
        return lines

    def service(self) -> str:
        """Type=forking on gunicorn's pidfile. Restart=always, not on-failure: a new master that
        dies while the old one still drains leaves systemd, once the old one exits 0, with a
        pidfile naming a dead process: the unit ends "successfully", and on-failure would leave
        the site down. (A hand-over's own TERM of the old master restarts nothing: systemd
        adopts the new one first.)

        No start limit: an app that cannot boot while its database is down (at boot, say)
        keeps trying until it is back, instead of giving up after five tries in ten seconds;
        from systemd 254 on, ever more slowly (1 s, then up to 30 s apart). A system unit
        waits for the network to be up (a remote database); a user manager has no such target."""
        wanted = "default.target" if self.kind == "user" else "multi-user.target"
        network = ["After=network.target"] if self.kind == "user" else [
            "After=network-online.target", "Wants=network-online.target"]
        backoff = ["RestartSteps=5", "RestartMaxDelaySec=30"] if self.systemd_version >= 254 else []
        return "\n".join([
            f"# Written by {self.dist}'s deploy/remote.sh for {self.app_dir}; every deploy rewrites it.",
            "[Unit]", f"Description={self.dist} ({self.env}) from {self.app_dir}", *network, "StartLimitIntervalSec=0",
            "", "[Service]", "Type=forking", f"PIDFile={self.app_dir}/shared/run/gunicorn.pid",
            f"ExecStart=/bin/sh {self.app_dir}/remote.sh exec_master", "Restart=always", "RestartSec=1", *backoff,
            f"TimeoutStartSec={self.boot_timeout}", f"TimeoutStopSec={self.stop_timeout + 5}",
            *self.common(), "", "[Install]", f"WantedBy={wanted}", ""])

    def rotate_service(self) -> str:
        return "\n".join([
            f"# Written by {self.dist}'s deploy/remote.sh: rotates {self.app_dir}/shared/log (see rotate_logs).",
            "[Unit]", f"Description=rotate the logs of {self.dist} ({self.env}) from {self.app_dir}", "",
            "[Service]", "Type=oneshot", f"ExecStart=/bin/sh {self.app_dir}/remote.sh rotate_logs", *self.common(), ""])

    def rotate_timer(self) -> str:
        return "\n".join([
            "[Unit]", f"Description=rotate the logs of {self.dist} ({self.env}) every 5 minutes", "",
            "[Timer]", "OnBootSec=5min", "OnUnitActiveSec=5min", "", "[Install]", "WantedBy=timers.target", ""])

    def files(self) -> dict[str, str]:
        return {f"{self.unit}.service": self.service(), f"{self.unit}-logs.service": self.rotate_service(),
                f"{self.unit}-logs.timer": self.rotate_timer()}


def replace_if_changed(path: Path, text: str) -> bool:
    """Write TEXT to PATH (atomically) unless it already holds it; True when written."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def systemd_version() -> int:
    """The host's systemd version, 0 if unknown."""
    try:
        return parse_version(subprocess.run(["systemctl", "--version"], capture_output=True, text=True,
                                            check=False).stdout)
    except OSError:
        return 0


def parse_version(text: str) -> int:
    """`systemctl --version`'s first line, "systemd 252 (252.30-1~deb12u2)": 252; 0 if not that."""
    words = text.split()
    return int(words[1]) if len(words) > 1 and words[0] == "systemd" and words[1].isdigit() else 0


def write_units(service: Service, units: Units) -> list[str]:
    """The unit files where they changed, then daemon-reload; the names written. Raises
    OSError when systemd cannot be reloaded."""
    if not units.systemd_version:
        units = replace(units, systemd_version=systemd_version())
    service.unit_dir.mkdir(parents=True, exist_ok=True)
    changed = [name for name, text in units.files().items() if replace_if_changed(service.unit_dir / name, text)]
    if changed and not quiet([*service.systemctl, "daemon-reload"]):
        raise OSError(f"{' '.join(service.systemctl)} daemon-reload failed after writing {', '.join(changed)}")
    return changed
