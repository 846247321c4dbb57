"""INI configuration: base.ini, then <env>.ini, then a host-local file, then environment.

SCHEMA below is the whole contract: every section and key the app knows, with a parser
that turns the text into a value or says what is wrong. Defaults live in base.ini, so
every key must be present once the files are merged. Every problem is reported at once,
each naming the file, section and key.
"""
from __future__ import annotations

import configparser
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# An environment is any config/<name>.ini with such a name, but base.ini and local.ini: a
# stage is `cp config/prod.ini config/staging.ini`, nothing else to register.
ENVIRONMENT_NAME = re.compile(r"[a-z][a-z0-9-]*")
NOT_ENVIRONMENTS = ("base", "local")
ENV_PREFIX = "{{ cookiecutter.package_name | upper }}_"  # e.g. {{ cookiecutter.package_name | upper }}_SERVER_PORT=9000
LOCAL_CONFIG_VAR = ENV_PREFIX + "LOCAL_CONFIG"  # path of the host-local file (secrets)
# %(shared)s in an INI file: the host's shared/ directory (remote.sh exports it), which
# outlives every release; elsewhere <project>/instance. Nothing is created here.
SHARED_DIR_VAR = ENV_PREFIX + "SHARED_DIR"
CONFIG_DIR_VAR = ENV_PREFIX + "CONFIG_DIR"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PLACEHOLDER_SECRETS = {"", "change-me", "changeme", "secret", "dev-only-not-secret"}
SECRET_WORDS = ("password", "secret", "token", "key")


def is_secret(key: str) -> bool:
    """Keys whose values are never shown (config-show masks them): secret_key, and every key
    named like *password*, *secret*, *token* or *key*."""
    return any(word in key.lower() for word in SECRET_WORDS)


def hide_password(value: str) -> str:
    """`value` with the password of a URL in it replaced by ***, for showing a database URL.
{%- if cookiecutter.database != "none" %}

    SQLAlchemy's own rendering where it is installed and reads the URL as we do; else, and
    for a password with an unquoted @ (SQLAlchemy would take the rest for the host), all
    between the user's ":" and the last "@" goes: never a part of the password shown."""
{%- else %}

    All between the user's ":" and the last "@" goes: never a part of the password shown."""
{%- endif %}
    scheme, sep, rest = value.partition("://")
    authority = rest.split("?", 1)[0]
    if not sep or "@" not in authority:
        return value
    userinfo, _, host = authority.rpartition("@")
    user, colon, {{ "password" if cookiecutter.database != "none" else "_" }} = userinfo.partition(":")
    if not colon:
        return value
{%- if cookiecutter.database != "none" %}
    try:
        from sqlalchemy.engine import make_url
    except ImportError:  # config.py as a script (-S)
        make_url = None
    if make_url is not None:
        try:
            url = make_url(value)
        except Exception:  # noqa: BLE001 (any parse failure: the careful way below)
            url = None
        if url is not None and url.password == password and url.username == user:
            return url.render_as_string(hide_password=True)
{%- endif %}
    return f"{scheme}://{user}:***@{host}{rest[len(authority):]}"


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not a boolean (use true or false)")


def _int(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"{raw!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"{value} is out of range (must be {bounds})")
        return value

    return parse


def _choice(options: tuple[str, ...], case: Callable[[str], str] = str.upper) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = case(raw.strip())
        if value not in options:
            raise ValueError(f"{raw!r} is not one of {', '.join(options)}")
        return value

    return parse


def _str(raw: str) -> str:
    return raw.strip()


def _line(raw: str) -> str:
    """One line of text (a continuation line in the INI file would be a second command)."""
    value = raw.strip()
    if "\n" in value:
        raise ValueError("spans several lines: give it on one line")
    return value


def _paths(raw: str) -> str:
    """URL paths, spaced (/ /about /static/style.css): each starts with / and holds no
    space, quote or control character. Kept as one spaced string."""
    paths = raw.split()
    for path in paths:
        if not re.fullmatch(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*", path):
            raise ValueError(f"{path!r} is not a URL path (it starts with /, e.g. / or /about)")
    return " ".join(paths)


def _command(raw: str) -> str:
    """A command name or absolute path, safe to hand to the host's shell as it is."""
    value = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9._/+-]+", value):
        raise ValueError(f"{raw!r} is not a command or path (letters, digits and ._/+- only)")
    return value


def _size_kib(raw: str) -> int:
    """A size such as 512K, 50M or 1G, as KiB (what remote.sh compares a log with)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG])i?B?\s*", raw, re.IGNORECASE)
    if not m or int(m[1]) == 0:
        raise ValueError(f"{raw!r} is not a size (a whole number with K, M or G, e.g. 50M)")
    return int(m[1]) * {"K": 1, "M": 1024, "G": 1024 * 1024}[m[2].upper()]


{%- if cookiecutter.database != "none" %}
# The databases this project has a driver for: SQLAlchemy URL schemes.
{%- if cookiecutter.database == "postgresql" %}
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")
{%- else %}
DATABASE_SCHEMES = ("sqlite",)
{%- endif %}
DATABASE_EXAMPLES = "sqlite:////absolute/path.sqlite3{{ ' or postgresql://user:password@host/dbname' if cookiecutter.database == 'postgresql' }}"


def _database_url(raw: str) -> str:
    """A SQLAlchemy URL for a database we have a driver for; empty means "not set here".

    sqlite:///<absolute path> (a relative one would follow whatever directory the app starts
    in: a release directory, gone after a few deploys); sqlite:// (in memory, for tests).
{%- if cookiecutter.database == "postgresql" %}
    postgresql://… or postgresql+psycopg://… (both become postgresql+psycopg://: psycopg 3).
{%- endif %}
    Messages never repeat the URL: it may hold a password.
    """
    value = raw.strip()
    if not value:
        return ""
    scheme, sep, rest = value.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        raise ValueError(f"is not a database URL (scheme://…, e.g. {DATABASE_EXAMPLES})")
    if scheme not in DATABASE_SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}: this project has drivers for {', '.join(DATABASE_SCHEMES)} "
                         f"(e.g. {DATABASE_EXAMPLES})")
    if scheme == "sqlite":
        if rest == "" or rest == "/:memory:":
            return value  # in memory: tests
        if not rest.startswith("/"):
            raise ValueError("a SQLite URL has no host: sqlite:///<path> (three slashes, then the path)")
        path = rest[1:]
        if not path.startswith("/"):
            raise ValueError(f"the SQLite path {path!r} is relative: make it absolute, "
                             "e.g. sqlite:///%(shared)s/data/app.sqlite3 (an absolute path starts sqlite:////)")
        return "sqlite:///" + "/" + os.path.normpath(path).lstrip("/")
{%- if cookiecutter.database == "postgresql" %}
    database = rest.partition("?")[0].partition("/")[2]
    if not database:
        raise ValueError("names no database: postgresql://user:password@host/dbname")
    return "postgresql+psycopg://" + rest
{%- endif %}
{%- endif %}


# [proxy] domain: a DNS name of two labels or more (what certbot and nginx's server_name take).
DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
TLS_MODES = ("acme", "own", "off")


def _domain(raw: str) -> str:
    value = raw.strip().lower().rstrip(".")
    if value and not DOMAIN.fullmatch(value):
        raise ValueError(f"{raw.strip()!r} is not a domain name (e.g. app.example.com; empty: no proxy)")
    return value


def _tls(raw: str) -> str:
    value = raw.strip().lower() or "acme"
    if value not in TLS_MODES:
        raise ValueError(f"{raw.strip()!r} is not one of {', '.join(TLS_MODES)} (acme: a certificate from "
                         "acme_directory; own: certificate and private_key; off: plain http)")
    return value


def _email(raw: str) -> str:
    value = raw.strip()
    if value and not re.fullmatch(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", value):
        raise ValueError(f"{value!r} is not an e-mail address (empty: none is given to the ACME server)")
    return value


def _https_url(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%/+-]*)?", value):
        raise ValueError(f"{value!r} is not an https:// URL (an ACME directory, e.g. Let's Encrypt's)")
    return value


def _host_path(raw: str) -> str:
    """An absolute path on the host, or empty."""
    value = raw.strip()
    if value and not re.fullmatch(r"/[A-Za-z0-9._/+-]*", value):
        raise ValueError(f"{value!r} is not an absolute path on the host (letters, digits and ._/+- only)")
    return os.path.normpath(value) if value else value


def _one_host(raw: str) -> str:
    """One of the rollout's hosts as REMOTE_HOSTS names it (a name, an ssh alias or an address), or empty."""
    value = raw.strip()
    if value and not re.fullmatch(r"[A-Za-z0-9_.:@\[\]-]+", value):
        raise ValueError(f"{value!r} is not one host (a name or address as REMOTE_HOSTS gives it; empty: the first)")
    return value


def proxy_errors(proxy: Mapping[str, Any], origins: Mapping[tuple[str, str], str]) -> list[str]:
    """What [proxy] needs beyond each key's own check: own TLS names its files, acme needs none."""
    if not proxy["domain"]:
        return []
    where = origins.get(("proxy", "tls"), "[proxy]")
    if proxy["tls"] == "own":
        return [f"{where}: [proxy] {key} is empty: tls = own needs the host's {what}"
                for key, what in (("certificate", "certificate file"), ("private_key", "private key file"))
                if not proxy[key]]
    return []


# What the host-local file (shared/local.ini, the app's own account's to write) may not set.
NOT_LOCAL = {("deploy", "release_command"): "it runs at every deploy; set it in config/<env>.ini, in git"}


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Empty means "not set here" (for ssh settings: let ssh and ~/.ssh/config decide)."""
    return lambda raw: parse(raw) if raw.strip() else ""


SCHEMA: dict[str, dict[str, Callable[[str], Any]]] = {
    "app": {"debug": _bool, "secret_key": _str, "log_level": _choice(LOG_LEVELS), "message": _str,
            "max_content_length": _size_kib},
    "server": {
        "host": _str,
        "port": _int(1, 65535),
        "workers": _int(1),
        "threads": _int(1),
        "timeout": _int(1),
        "preload": _bool,
    },
    "deploy": {
        "host": _str,
        "hosts": _str,
        "user": _str,
        "dir": _str,
        "ssh_port": _optional(_int(1, 65535)),
        "keep_releases": _int(1),
        "python": _command,
        "release_command": _line,
        "smoke_paths": _paths,
        "log_max_size": _size_kib,
        "log_keep": _int(1, 100),
        "memory_max": _size_kib,
        "tasks_max": _int(16, 1000000),
        "worker_stop_timeout": _int(1, 3600),
        "jobs_host": _str,
{%- if cookiecutter.database != "none" %}
        "keep_backups": _int(1, 1000),
{%- endif %}
    },
    "proxy": {"domain": _domain, "tls": _tls,
              "acme_email": _email, "acme_directory": _https_url, "acme_ca_bundle": _host_path,
              "certificate": _host_path, "private_key": _host_path, "static_max_age": _int(0),
              "host": _one_host, "maintenance_retry_after": _int(0, 7 * 86400)},
{%- if cookiecutter.database != "none" %}
    "database": {"url": _database_url},
{%- endif %}
}


def _calendar(raw: str) -> str:
    """A systemd OnCalendar expression, on one line (the host checks it with
    systemd-analyze calendar at deploy time: only systemd knows the whole grammar)."""
    value = _line(raw)
    if not value:
        raise ValueError("is empty: give a systemd calendar expression, e.g. daily or *:0/10")
    if "%" in value or not value.isprintable():
        raise ValueError(f"{value!r} is not a calendar expression (e.g. daily, *-*-* 03:00:00, *:0/10)")
    return value


def _seconds(raw: str) -> int:
    """A duration: 90, 90s, 15m or 2h, as seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smh]?)\s*", raw)
    if not m or int(m[1]) == 0:
        raise ValueError(f"{raw!r} is not a duration (a whole number of seconds, or with s, m or h, e.g. 15m)")
    return int(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]]


def _required_line(raw: str) -> str:
    value = _line(raw)
    if not value:
        raise ValueError("is empty")
    return value


# Sections named [KIND:NAME], any number of them: background workers and scheduled jobs,
# run by systemd beside the web app (deploy/host/workers.py). Each key: its parser and its
# default (None: required).
PREFIXED: dict[str, dict[str, tuple[Callable[[str], Any], str | None]]] = {
    "process": {"command": (_required_line, None), "count": (_int(1, 32), "1")},
    "schedule": {"when": (_calendar, None), "command": (_required_line, None), "timeout": (_seconds, "1h"),
                 "without_systemd": (_choice(("refuse", "skip"), str.lower), "refuse")},
}
PREFIXED_NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")


def _prefixed(section: str) -> tuple[str, str] | None:
    """[process:mail] is ("process", "mail"); None for any other section."""
    kind, colon, name = section.partition(":")
    return (kind, name) if colon and kind in PREFIXED else None


class ConfigError(Exception):
    """Raised with every problem found; str() is one line per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class Config:
    env: str
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployed: bool = False  # on a host: remote.sh set the shared directory
    sources: list[str] = field(default_factory=list)
    origins: dict[tuple[str, str], str] = field(default_factory=dict)  # where each value was set
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)  # [process:NAME]: its keys
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)  # [schedule:NAME]

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]


def instance_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Flask's instance folder: shared/instance/ on a host (it outlives every release; never
    pruned), the project's instance/ in a checkout (not Flask's default beside src/)."""
    environ = os.environ if environ is None else environ
    if environ.get(SHARED_DIR_VAR):
        return Path(environ[SHARED_DIR_VAR]) / "instance"
    return default_config_dir(environ).resolve().parent / "instance"


def default_config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`config/` beside the package in a checkout, or in the release directory on a host."""
    environ = os.environ if environ is None else environ
    if environ.get(CONFIG_DIR_VAR):
        return Path(environ[CONFIG_DIR_VAR])
    return Path.cwd() / "config"


def environments(config_dir: Path | None = None) -> tuple[str, ...]:
    """The environments of CONFIG_DIR (default: default_config_dir()), sorted."""
    config_dir = config_dir or default_config_dir()
    return tuple(sorted(path.stem for path in config_dir.glob("*.ini")
                        if ENVIRONMENT_NAME.fullmatch(path.stem) and path.stem not in NOT_ENVIRONMENTS))


def unknown_environment(env: str, config_dir: Path | None = None) -> str | None:
    """The sentence for an ENV that CONFIG_DIR has no environment of, else None."""
    config_dir = config_dir or default_config_dir()
    known = environments(config_dir)
    if env in known:
        return None
    if not ENVIRONMENT_NAME.fullmatch(env) or env in NOT_ENVIRONMENTS:
        why = f"{env!r} is not an environment name (lowercase letters, digits and -, not base or local)"
    else:
        why = f"unknown environment {env!r}: there is no {_display(config_dir / (env + '.ini'))}"
    return f"{why} (the environments: {', '.join(known) or 'none'})"


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read_ini(path: Path, errors: list[str], shared: str) -> dict[str, dict[str, tuple[str, str]]]:
    """Return {section: {key: (raw value, where)}}; problems go to `errors`."""
    name = _display(path)
    parser = configparser.ConfigParser(defaults={"here": str(path.resolve().parent), "shared": shared})
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle, source=name)
    except OSError as exc:
        errors.append(f"{name}: cannot be read ({exc.strerror})")
        return {}
    except (configparser.Error, UnicodeDecodeError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        errors.append(f"{name}: not a valid INI file ({first_line})")
        return {}
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for section in parser.sections():
        found[section] = {}
        for key in parser.options(section):
            if key in ("here", "shared"):
                continue
            try:
                found[section][key] = (parser.get(section, key), name)
            except configparser.InterpolationError as exc:
                errors.append(f"{name}: [{section}] {key}: {exc.message.splitlines()[0]}")
    return found


def load_config(
    env: str,
    config_dir: Path | None = None,
    local_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge and validate the configuration for `env`; raise ConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    config_dir = config_dir or default_config_dir()
    if problem := unknown_environment(env, config_dir):
        raise ConfigError([problem])
    if local_file is None and environ.get(LOCAL_CONFIG_VAR):
        local_file = Path(environ[LOCAL_CONFIG_VAR])

    shared = environ.get(SHARED_DIR_VAR) or str(config_dir.resolve().parent / "instance")
    errors: list[str] = []
    files = [config_dir / "base.ini", config_dir / f"{env}.ini"]
    if local_file is not None and local_file.exists():
        files.append(local_file)
    merged: dict[str, dict[str, tuple[str, str]]] = {}
    prefixed: dict[str, dict[str, tuple[str, str]]] = {}
    for path in files:
        if not path.exists() and path != local_file:
            errors.append(f"{_display(path)}: missing")
            continue
        for section, keys in _read_ini(path, errors, shared).items():
            where = keys and next(iter(keys.values()))[1] or _display(path)
            if _prefixed(section):
                _merge_prefixed(section, keys, where, path == local_file, prefixed, errors)
                continue
            if section not in SCHEMA:
                known = ", ".join([*SCHEMA, *(f"{kind}:NAME" for kind in PREFIXED)])
                errors.append(f"{where}: unknown section [{section}] (known: {known})")
                continue
            for key, value in keys.items():
                if key not in SCHEMA[section]:
                    errors.append(f"{value[1]}: [{section}] unknown key {key!r}")
                    continue
                if path == local_file and (section, key) in NOT_LOCAL:
                    errors.append(f"{value[1]}: [{section}] {key} cannot be set in the host-local file: {NOT_LOCAL[section, key]}")
                    continue
                merged.setdefault(section, {})[key] = value
    for section, keys in SCHEMA.items():
        for key in keys:
            variable = f"{ENV_PREFIX}{section}_{key}".upper()
            if variable in environ:
                merged.setdefault(section, {})[key] = (environ[variable], f"environment variable {variable}")

    config = Config(env=env, sources=[_display(p) for p in files], deployed=bool(environ.get(SHARED_DIR_VAR)))
    looked_in = ", ".join(config.sources)
    for section, keys in SCHEMA.items():
        config.values[section] = {}
        for key, parse in keys.items():
            if key not in merged.get(section, {}):
                errors.append(f"[{section}] {key} is missing (looked in {looked_in})")
                continue
            raw, where = merged[section][key]
            config.origins[(section, key)] = where
            try:
                config.values[section][key] = parse(raw)
            except ValueError as exc:
                errors.append(f"{where}: [{section}] {key}: {exc}")
    _parse_prefixed(config, prefixed, errors)
    if not errors:
        errors += proxy_errors(config["proxy"], config.origins)
    if not errors and env == "prod" and config["app"]["debug"]:
        errors.append(f"[app] debug is on for prod (set in {merged['app']['debug'][1]}): turn it off")
    if errors:
        raise ConfigError(errors)
    return config


def _merge_prefixed(section: str, keys: dict[str, tuple[str, str]], where: str, local: bool,
                    prefixed: dict[str, dict[str, tuple[str, str]]], errors: list[str]) -> None:
    """A [process:NAME] or [schedule:NAME] section of one file, over what earlier files said."""
    kind, name = _prefixed(section)
    if not PREFIXED_NAME.fullmatch(name):
        errors.append(f"{where}: [{section}]: the name {name!r} must be lower-case letters, digits and -, "
                      "starting with a letter (at most 40)")
        return
    if local:  # they run code at every deploy, as the web app's command does: in git only
        errors.append(f"{where}: [{section}] cannot be set in the host-local file: set it in config/<env>.ini, in git")
        return
    for key, value in keys.items():
        if key not in PREFIXED[kind]:
            errors.append(f"{value[1]}: [{section}] unknown key {key!r} (known: {', '.join(PREFIXED[kind])})")
            continue
        prefixed.setdefault(section, {})[key] = value
    prefixed.setdefault(section, {})


def _parse_prefixed(config: Config, prefixed: dict[str, dict[str, tuple[str, str]]], errors: list[str]) -> None:
    for section, keys in sorted(prefixed.items()):
        kind, name = _prefixed(section)
        values = {}
        for key, (parse, default) in PREFIXED[kind].items():
            if key not in keys and default is None:
                errors.append(f"[{section}] {key} is missing (looked in {', '.join(config.sources)})")
                continue
            raw, where = keys.get(key, (default, "the default"))
            try:
                values[key] = parse(raw)
            except ValueError as exc:
                errors.append(f"{where}: [{section}] {key}: {exc}")
        (config.processes if kind == "process" else config.schedules)[name] = values


def workers(config: Config) -> dict[str, Any]:
    """What the host needs to run the workers and jobs of CONFIG (in host_facts)."""
    return {"stop_timeout": config["deploy"]["worker_stop_timeout"], "processes": config.processes,
            "schedules": config.schedules}


def host_facts(config: Config) -> dict[str, Any]:
    """All the host program reads of a release, in one start (config.py host ENV): the edge's
    [proxy] (as strings: the edge helper's flags), the deploy's release_command and
    smoke_paths, and the workers and jobs."""
    return {"proxy": {key: str(value) for key, value in config["proxy"].items()},
            "release_command": config["deploy"]["release_command"],
            "smoke_paths": config["deploy"]["smoke_paths"].split(), "workers": workers(config)}


def runtime_errors(config: Config) -> list[str]:
    """What stops the app from serving, beyond the schema: prod, and every environment on a
    deployed host, needs a real secret key{{ '' if cookiecutter.database == 'none' else ', and every
    environment a database URL' }}."""
    problems = []
    if (config.env == "prod" or config.deployed) and config["app"]["secret_key"] in PLACEHOLDER_SECRETS:
        where = f"{config.env} on a deployed host" if config.deployed else "prod"
        problems.append(
            f"[app] secret_key is missing or a placeholder for {where}: set it in the host-local "
            f"file ({LOCAL_CONFIG_VAR}, shared/local.ini on a deployed host)"
        )
{%- if cookiecutter.database != "none" %}
    if config["database"]["url"] == "":
        problems.append(
            f"[database] url is not set for {config.env}: set it on the host: make config-set SETTING=database.url "
            f"(here: config/local.ini or {ENV_PREFIX}DATABASE_URL)"
        )
{%- endif %}
    return problems


if __name__ == "__main__":
    # `python config.py get ENV SECTION KEY [SECTION KEY …]`: merged settings, one a line,
    # stdlib only, for the Makefile (it needs deploy settings before any venv exists) and the
    # host (a release's settings in one Python start).
    import json
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "host":  # `config.py host ENV`: JSON, for the host program
        try:
            print(json.dumps(host_facts(load_config(sys.argv[2]))))
        except ConfigError as exc:
            sys.exit(f"the {sys.argv[2]} configuration is invalid:\n{exc}")
        sys.exit(0)
    args = sys.argv[3:]
    if len(sys.argv) < 5 or sys.argv[1] != "get" or len(args) % 2:
        sys.exit("usage: config.py get ENV SECTION KEY [SECTION KEY ...]")
    wanted = list(zip(args[::2], args[1::2]))
    for section, key in wanted:
        if key not in SCHEMA.get(section, {}):
            sys.exit(f"unknown setting [{section}] {key}")
    try:
        config = load_config(sys.argv[2])
    except ConfigError as exc:
        sys.exit(f"the {sys.argv[2]} configuration is invalid:\n{exc}")
    print("\n".join(str(config[section][key]) for section, key in wanted))
