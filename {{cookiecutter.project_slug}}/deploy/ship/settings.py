"""What one deploy target is given: make's variables, then config/<APP_ENV>.ini, read once.

Make hands its command-line and environment variables to the recipe's environment, so
os.environ holds exactly what the user gave; every other value comes from the merged INI
files through the app's own config.py (its SCHEMA holds the defaults). Every value that
reaches ssh, scp or the host is then checked by type (deploy/variables.py).
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ship.messages import ShipError

DEPLOY = Path(__file__).resolve().parent.parent  # deploy/
sys.path.insert(0, str(DEPLOY))
import variables  # deploy/variables.py, beside this package

# Variable: the INI setting it defaults to (section, key), or its default when it has none.
FROM_INI = {
    "REMOTE_HOST": ("deploy", "host"), "REMOTE_USER": ("deploy", "user"), "REMOTE_DIR": ("deploy", "dir"),
    "SSH_PORT": ("deploy", "ssh_port"), "KEEP_RELEASES": ("deploy", "keep_releases"), "PORT": ("server", "port"),
    "HOST_PYTHON": ("deploy", "python"), "LOG_MAX_KB": ("deploy", "log_max_size"), "LOG_KEEP": ("deploy", "log_keep"),
    "MEMORY_MAX_KB": ("deploy", "memory_max"), "TASKS_MAX": ("deploy", "tasks_max"),
}
DEFAULTS = {"APP_ENV": "prod", "LINES": "100", "BATCH": "1", "NGINX_PORT": "80"}
OTHERS = ("FOLLOW", "SSH_OPTS", "CONFIRM", "SKIP_RELEASE_COMMAND", "NO_POST_DEPLOY", "STATIC_ROOT", "EXEC_CMD",
          "SETTING", "BACKUP", "RELEASE", "REMOTE_HOSTS", "PACK_TARGET", "DRY_RUN", "FORCE", "MESSAGE",
          "PROCESS", "JOB", "DEPLOY_USER")
CHECKED = ("APP_ENV", "REMOTE_HOST", "REMOTE_USER", "REMOTE_DIR", "SSH_PORT", "PORT", "KEEP_RELEASES", "LOG_MAX_KB",
           "LOG_KEEP", "HOST_PYTHON", "MEMORY_MAX_KB", "TASKS_MAX", "LINES", "CONFIRM", "FORCE")


@dataclass
class Project:
    """The project's own facts, from the Makefile: name, version, package, minimum Python, make."""
    name: str
    version: str
    package: str
    min_python: str
    make: str = "make"
    bundle: Path = Path("build/remote.sh")


@dataclass
class Settings:
    project: Project
    values: dict[str, str]
    config: object = None  # the app's merged config (config.Config)
    hosts: list[str] = field(default_factory=list)  # several hosts: REMOTE_HOSTS or [deploy] hosts

    def __getitem__(self, name: str) -> str:
        return self.values.get(name, "")

    def setting(self, section: str, key: str) -> str:
        value = self.config[section][key] if self.config and section in self.config.values else ""
        return "" if value is None else str(value)

    @property
    def jobs_host(self) -> str:
        """Of several hosts, the one that runs the jobs: [deploy] jobs_host, else the first."""
        return self.setting("deploy", "jobs_host") or (self.hosts[0] if self.hosts else "")

    @property
    def proxy_host(self) -> str:
        """Of several hosts behind a [proxy] domain, the one with the certificate and the nginx
        site, balancing over them all: [proxy] host, else the first; "" without several hosts or a domain."""
        if not (self.hosts and self.setting("proxy", "domain")):
            return ""
        return self.setting("proxy", "host") or self.hosts[0]

    @property
    def env(self) -> str:
        return self.values["APP_ENV"]


def load_config_module(package: str):
    """src/<package>/config.py, standard library only, without importing the app."""
    spec = importlib.util.spec_from_file_location("project_config", Path("src") / package / "config.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def read(project: Project, environ: dict[str, str], goal: str) -> Settings:
    """The settings of one target, checked: ShipError (status 2) names every problem."""
    given = {name: environ[name] for name in (*FROM_INI, *DEFAULTS, *OTHERS) if name in environ}
    env = given.get("APP_ENV", DEFAULTS["APP_ENV"])
    problem = variables.problems({"APP_ENV": env})
    if problem:  # before the INI files: the name picks them
        raise ShipError("\n".join(problem), plain=True)
    config_py = load_config_module(project.package)
    if unknown := config_py.unknown_environment(env):
        raise ShipError(f"APP_ENV: {unknown}", plain=True)
    try:
        config = config_py.load_config(env)
    except config_py.ConfigError as exc:
        raise ShipError(f"the {env} configuration is invalid:\n{exc}", plain=True) from None
    values = {**DEFAULTS, **given}
    for name, (section, key) in FROM_INI.items():
        if name not in given:
            value = config[section][key]
            values[name] = "" if value is None else str(value)
    settings = Settings(project, values, config)
    if "REMOTE_HOSTS" in given:
        settings.hosts = parse_hosts(given["REMOTE_HOSTS"])
    elif "REMOTE_HOST" not in given:
        settings.hosts = parse_hosts(settings.setting("deploy", "hosts"))
    checked = {name: values.get(name, "") for name in CHECKED}
    if settings.hosts:  # each host is checked as it is used; the rest once
        checked.pop("REMOTE_HOST")
        checked["REMOTE_HOST"] = settings.hosts[0]
    found = variables.problems(checked, goal)
    if settings.hosts and settings.jobs_host not in settings.hosts:
        found.append(f"[deploy] jobs_host of config/{env}.ini is {settings.jobs_host}, which is not one of the hosts "
                     f"({' '.join(settings.hosts)})")
    if settings.proxy_host and settings.proxy_host not in settings.hosts:
        found.append(f"[proxy] host of config/{env}.ini is {settings.proxy_host}, which is not one of the hosts "
                     f"({' '.join(settings.hosts)}): the proxy host balances over them and is one of them")
    for host in settings.hosts[1:]:
        found += variables.problems({"REMOTE_HOST": host}, goal)
    if found:
        raise ShipError("\n".join(found), plain=True)
    return settings


def parse_hosts(text: str) -> list[str]:
    hosts = text.replace(",", " ").split()
    dupes = sorted({h for h in hosts if hosts.count(h) > 1})
    if dupes:
        raise ShipError(f"REMOTE_HOSTS names {' '.join(dupes)} more than once: one rollout per host at a time")
    return hosts
