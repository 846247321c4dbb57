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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

ENVIRONMENTS = ("dev", "test", "prod")
ENV_PREFIX = "{{ cookiecutter.package_name | upper }}_"  # e.g. {{ cookiecutter.package_name | upper }}_SERVER_PORT=9000
LOCAL_CONFIG_VAR = ENV_PREFIX + "LOCAL_CONFIG"  # path of the host-local file (secrets)
CONFIG_DIR_VAR = ENV_PREFIX + "CONFIG_DIR"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PLACEHOLDER_SECRETS = {"", "change-me", "changeme", "secret", "dev-only-not-secret"}
SECRET_WORDS = ("password", "secret", "token", "key")


def is_secret(key: str) -> bool:
    """Keys whose values are never shown (config-show masks them): secret_key, and every key
    named like *password*, *secret*, *token* or *key*."""
    return any(word in key.lower() for word in SECRET_WORDS)


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


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper()
        if value not in options:
            raise ValueError(f"{raw!r} is not one of {', '.join(options)}")
        return value

    return parse


def _str(raw: str) -> str:
    return raw.strip()


def _command(raw: str) -> str:
    """A command name or absolute path, safe to hand to the host's shell as it is."""
    value = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9._/+-]+", value):
        raise ValueError(f"{raw!r} is not a command or path (letters, digits and ._/+- only)")
    return value


def _size_kib(raw: str) -> int:
    """A size such as 512K, 50M or 1G, as KiB (what remote.sh compares a log with)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG])i?B?\s*", raw, re.I)
    if not m or int(m[1]) == 0:
        raise ValueError(f"{raw!r} is not a size (a whole number with K, M or G, e.g. 50M)")
    return int(m[1]) * {"K": 1, "M": 1024, "G": 1024 * 1024}[m[2].upper()]


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Empty means "not set here" (for ssh settings: let ssh and ~/.ssh/config decide)."""
    return lambda raw: parse(raw) if raw.strip() else ""


SCHEMA: dict[str, dict[str, Callable[[str], Any]]] = {
    "app": {"debug": _bool, "secret_key": _str, "log_level": _choice(LOG_LEVELS), "message": _str},
    "server": {
        "host": _str,
        "port": _int(1, 65535),
        "workers": _int(1),
        "threads": _int(1),
        "timeout": _int(1),
    },
    "deploy": {
        "host": _str,
        "hosts": _str,
        "user": _str,
        "dir": _str,
        "ssh_port": _optional(_int(1, 65535)),
        "keep_releases": _int(1),
        "python": _command,
        "release_command": _str,
        "log_max_size": _size_kib,
        "log_keep": _int(1, 100),
    },
}


class ConfigError(Exception):
    """Raised with every problem found; str() is one line per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class Config:
    env: str
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    origins: dict[tuple[str, str], str] = field(default_factory=dict)  # where each value was set

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]


def default_config_dir() -> Path:
    """`config/` beside the package in a checkout, or in the release directory on a host."""
    if os.environ.get(CONFIG_DIR_VAR):
        return Path(os.environ[CONFIG_DIR_VAR])
    return Path.cwd() / "config"


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read_ini(path: Path, errors: list[str]) -> dict[str, dict[str, tuple[str, str]]]:
    """Return {section: {key: (raw value, where)}}; problems go to `errors`."""
    name = _display(path)
    parser = configparser.ConfigParser(defaults={"here": str(path.resolve().parent)})
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
            if key == "here":
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
    if env not in ENVIRONMENTS:
        raise ConfigError([f"unknown environment {env!r} (expected one of {', '.join(ENVIRONMENTS)})"])
    if local_file is None and environ.get(LOCAL_CONFIG_VAR):
        local_file = Path(environ[LOCAL_CONFIG_VAR])

    errors: list[str] = []
    files = [config_dir / "base.ini", config_dir / f"{env}.ini"]
    if local_file is not None and local_file.exists():
        files.append(local_file)
    merged: dict[str, dict[str, tuple[str, str]]] = {}
    for path in files:
        if not path.exists() and path != local_file:
            errors.append(f"{_display(path)}: missing")
            continue
        for section, keys in _read_ini(path, errors).items():
            where = keys and next(iter(keys.values()))[1] or _display(path)
            if section not in SCHEMA:
                errors.append(f"{where}: unknown section [{section}] (known: {', '.join(SCHEMA)})")
                continue
            for key, value in keys.items():
                if key not in SCHEMA[section]:
                    errors.append(f"{value[1]}: [{section}] unknown key {key!r}")
                    continue
                merged.setdefault(section, {})[key] = value
    for section, keys in SCHEMA.items():
        for key in keys:
            variable = f"{ENV_PREFIX}{section}_{key}".upper()
            if variable in environ:
                merged.setdefault(section, {})[key] = (environ[variable], f"environment variable {variable}")

    config = Config(env=env, sources=[_display(p) for p in files])
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
    if not errors and env == "prod" and config["app"]["debug"]:
        errors.append(f"[app] debug is on for prod (set in {merged['app']['debug'][1]}): turn it off")
    if errors:
        raise ConfigError(errors)
    return config


def runtime_errors(config: Config) -> list[str]:
    """What stops the app from serving, beyond the schema: prod needs a real secret key."""
    if config.env == "prod" and config["app"]["secret_key"] in PLACEHOLDER_SECRETS:
        return [
            "[app] secret_key is missing or a placeholder for prod: set it in the host-local "
            f"file ({LOCAL_CONFIG_VAR}, shared/local.ini on a deployed host)"
        ]
    return []


if __name__ == "__main__":
    # `python config.py get ENV SECTION KEY`: one merged setting, stdlib only, for the
    # Makefile (it needs deploy settings before any venv exists).
    import sys

    if len(sys.argv) != 5 or sys.argv[1] != "get":
        sys.exit("usage: config.py get ENV SECTION KEY")
    try:
        print(load_config(sys.argv[2])[sys.argv[3]][sys.argv[4]])
    except ConfigError as exc:
        sys.exit(f"the {sys.argv[2]} configuration is invalid:\n{exc}")
    except KeyError:
        sys.exit(f"unknown setting [{sys.argv[3]}] {sys.argv[4]}")
