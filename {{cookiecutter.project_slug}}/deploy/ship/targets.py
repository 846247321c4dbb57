"""The make targets the deploy program runs, in one registry: name, what it does for
several hosts ("rollout": a fleet at once, "each": host after host, "one": refused)."""
from __future__ import annotations

import base64
import getpass
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nginx_conf  # deploy/nginx_conf.py
from ship import fleet, local, plan
from ship.messages import ShipError, message
from ship.remote import Remote, address, deploy_who, say
from ship.settings import Settings

SETTING = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")
BACKUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[Settings, Remote], int] | Callable[[Settings, list[str]], int]
    several: str  # "rollout", "each" or "one"


TARGETS: dict[str, Target] = {}


def target(name: str, several: str = "each") -> Callable:
    def register(run: Callable) -> Callable:
        TARGETS[name] = Target(name, run, several)
        return run
    return register


def host_command(name: str) -> Callable[[Settings, Remote], int]:
    """A host command that is a make target of the same name (start, stop, ...)."""
    return lambda settings, remote: remote.run(name.replace("-", "_")).status


for _name in ("check-host",):
    target(_name)(host_command(_name))
target("deploy", "rollout")(fleet.deploy)
target("plan", "rollout")(plan.plan)
target("copy", "rollout")(fleet.copy)
target("rollback", "rollout")(fleet.rollback)


@target("exec")
def run_exec(settings: Settings, remote: Remote) -> int:
    command = settings["EXEC_CMD"]
    if not command:
        raise ShipError(message("no_cmd"))
    return remote.run("exec", base64.b64encode(command.encode()).decode()).status


@target("shell", "one")
def run_shell(settings: Settings, remote: Remote) -> int:
    return remote.attached("shell", tty=True)


def checked_setting(settings: Settings, example: str, more: str = "") -> str:
    if not SETTING.fullmatch(settings["SETTING"]):
        raise ShipError(message("bad_setting", example=example, setting=settings["SETTING"], more=more))
    return settings["SETTING"]


@target("config-set", "one")
def config_set(settings: Settings, remote: Remote) -> int:
    setting = checked_setting(settings, "app.secret_key", "; the value is read from stdin")
    if sys.stdin.isatty():  # getpass puts echo back on, also after Ctrl-C
        value = getpass.getpass(f"value for {setting} (not shown): ", stream=sys.stderr)
    else:
        value = sys.stdin.readline()
        if not value:
            raise ShipError(message("no_value", setting=setting))
        value = value.removesuffix("\n")
    return remote.attached("config_set", setting, given=(value + "\n").encode())


@target("config-unset", "one")
def config_unset(settings: Settings, remote: Remote) -> int:
    return remote.run("config_unset", checked_setting(settings, "app.message")).status


@target("config-show")
def config_show(settings: Settings, remote: Remote) -> int:
    return remote.run("config_show").status


@target("db-backup", "one")
def db_backup(settings: Settings, remote: Remote) -> int:
    return remote.run("db_backup").status


@target("db-restore", "one")
def db_restore(settings: Settings, remote: Remote) -> int:
    backup = settings["BACKUP"]
    if not BACKUP.fullmatch(backup):
        raise ShipError(message("bad_backup", backup=backup))
    if settings["CONFIRM"] != "1":
        raise ShipError(message("restore_confirm", backup=backup))
    return remote.run("db_restore", backup).status


@target("host-target", "one")
def host_target(settings: Settings, remote: Remote) -> int:
    """The host's target, for `make pack REMOTE_HOST=h`."""
    with remote:
        print(local.reach(remote, settings.project.min_python)["target"])
    return 0


@target("host-deploy", "one")
def host_deploy(settings: Settings, remote: Remote) -> int:
    """Deploy the tarball RELEASE as it is (tests use it: a release for another target)."""
    with remote:
        local.reach(remote, settings.project.min_python)
        return local.send_release(settings, remote, Path(settings["RELEASE"]), "deploy").status


@target("nginx-conf", "rollout")
def write_nginx_conf(settings: Settings, names: list[str]) -> int:
    """Ask every host its address (ssh -G: no connection) and, for a relative REMOTE_DIR
    without STATIC_ROOT, the first host its home; then write build/nginx/<name>.conf."""
    s = settings
    if not nginx_conf.LISTEN.fullmatch(s["NGINX_PORT"]):
        raise ShipError(message("bad_nginx_port", port=s["NGINX_PORT"]))
    who = deploy_who()
    addresses = [address(s, name) for name in names]
    home = ""
    if not s["STATIC_ROOT"] and not s["REMOTE_DIR"].startswith("/"):
        remote = Remote(s, names[0], who)
        said = subprocess.run(remote.ssh("cd && pwd -P"), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              check=False)
        home = said.stdout.strip().splitlines()[-1] if said.returncode == 0 and said.stdout.strip() else ""
        if not home.startswith("/"):
            raise ShipError(message("no_home", dir=s["REMOTE_DIR"], host=names[0],
                                    why=(said.stdout + said.stderr).strip()), 1)
    static = nginx_conf.static_root(s["STATIC_ROOT"], s["REMOTE_DIR"], home)
    out = Path("build/nginx") / f"{s.project.name}.conf"
    nginx_conf.write(out, nginx_conf.render(s.project.name, addresses, s["PORT"], s["NGINX_PORT"], static, 3, "10s"))
    servers = [nginx_conf.server(a) for a in addresses]
    say(f"wrote {out}: upstream {', '.join(server + ':' + s['PORT'] for server in servers)}, "
        f"listen {s['NGINX_PORT']}, /static/ from {static}")
    return 0


@target("run-job", "rollout")
def run_job(settings: Settings, names: list[str]) -> int:
    """On several hosts, on the jobs host alone ([deploy] jobs_host)."""
    name = settings.jobs_host if settings.hosts else names[0]
    return Remote(settings, name, deploy_who()).run("run_job").status


@target("lock")
def hold(settings: Settings, remote: Remote) -> int:
    """make lock MESSAGE="…": the message goes to the host as data (it checks it)."""
    return remote.run("lock", settings["MESSAGE"]).status


def edge_host(settings: Settings, names: list[str]) -> Remote:
    """Where make maintenance and make live go: the proxy host of several, else the one host."""
    if settings.proxy_host:
        say(f"==> {settings.proxy_host} (the proxy host: its nginx answers for every host)")
    return Remote(settings, settings.proxy_host or names[0], deploy_who())


@target("maintenance", "rollout")
def maintenance(settings: Settings, names: list[str]) -> int:
    """make maintenance MESSAGE="…": the message goes to the host as data (it checks and escapes it)."""
    if not settings.setting("proxy", "domain"):
        raise ShipError(f"make maintenance needs a [proxy] domain (config/{settings.env}.ini has none): without one, "
                        "nginx does not answer in front of the app, so nothing can show the page")
    return edge_host(settings, names).run("maintenance", settings["MESSAGE"]).status


@target("live", "rollout")
def live(settings: Settings, names: list[str]) -> int:
    return edge_host(settings, names).run("live").status


@target("setup-host")
def setup_host(settings: Settings, remote: Remote) -> int:
    """make setup-host REMOTE_USER=root DEPLOY_USER=deploy: the host checks both (and REMOTE_DIR
    goes as the deploy user's, relative to its home)."""
    return remote.run("setup_host", env={"DEPLOY_USER": settings["DEPLOY_USER"],
                                         "DEPLOY_DIR": settings["REMOTE_DIR"]}).status


def register_host_commands(names: list[str]) -> None:
    """The host program's registry's targets (start, stop, ...): each is run there as it is,
    unless it is registered above with what it needs (lock's MESSAGE)."""
    for name in names:
        if name not in TARGETS:
            target(name)(host_command(name))
