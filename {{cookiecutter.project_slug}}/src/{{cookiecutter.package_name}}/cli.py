"""Command line: `{{ cookiecutter.package_name }} check-config [--env ENV]`, and config-set, config-unset and
config-show, which remote.sh runs on a host to edit and show its host-local file."""
from __future__ import annotations

import argparse
import configparser
import os
import sys
from pathlib import Path

from .config import SCHEMA, ConfigError, environments, hide_password, is_secret, load_config, runtime_errors

LOCAL_HEADER = "# Host-local settings, never overwritten by a deploy (make config-set / config-unset).\n"


def check_config(envs: list[str], config_dir: Path | None, local_file: Path | None, runtime: bool) -> int:
    failed = False
    for env in envs:
        try:
            config = load_config(env, config_dir=config_dir, local_file=local_file)
            problems = runtime_errors(config) if runtime else []
        except ConfigError as exc:
            problems = exc.errors
        if problems:
            failed = True
            print(f"{env}: {len(problems)} problem(s)", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
        else:
            print(f"{env}: ok")
    return 1 if failed else 0


def parse_setting(setting: str) -> tuple[str, str]:
    section, _, key = setting.partition(".")
    if section not in SCHEMA:
        raise SystemExit(f"error: unknown setting {setting!r}: give SETTING=section.key, sections: {', '.join(SCHEMA)}")
    if key not in SCHEMA[section]:
        raise SystemExit(f"error: unknown setting {setting!r}: [{section}] has {', '.join(SCHEMA[section])}")
    return section, key


def edit_local(env: str, local: Path, section: str, key: str, value: str | None) -> int:
    """Set (or, with None, remove) one value in the host-local file: the merged config is
    checked first, and the file replaced atomically, mode 0600. The value is never printed."""
    parser = configparser.ConfigParser(interpolation=None)
    if local.exists():
        parser.read(local, encoding="utf-8")
    if value is None:
        if not parser.has_option(section, key):
            print(f"[{section}] {key} is not set in {local}: nothing to do")
            return 0
        parser.remove_option(section, key)
        if not parser.options(section):
            parser.remove_section(section)
    else:
        if not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, key, value.replace("%", "%%"))  # the loader interpolates %(...)s
    tmp = local.with_name(f".{local.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(LOCAL_HEADER)
        parser.write(handle)
    try:
        config = load_config(env, local_file=tmp)
        problems = runtime_errors(config)
    except ConfigError as exc:
        problems = exc.errors
    if problems:
        tmp.unlink()
        print(f"error: refused: with that change the {env} config would be invalid; {local} is unchanged:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem.replace(tmp.name, local.name)}", file=sys.stderr)
        return 2
    os.replace(tmp, local)
    print(f"{'set' if value is not None else 'removed'} [{section}] {key} in {local}")
    return 0


def config_set(args: argparse.Namespace) -> int:
    section, key = parse_setting(args.setting)
    value = sys.stdin.read()
    value = value.removesuffix("\n").removesuffix("\r")
    if "\n" in value or "\r" in value:
        raise SystemExit(f"error: the value for {args.setting} must be one line")
    try:  # on its own too: an environment variable may override it in the merged check
        SCHEMA[section][key](value)
    except ValueError as exc:
        print(f"error: refused: [{section}] {key}: {exc}; {args.local} is unchanged", file=sys.stderr)
        return 2
    return edit_local(args.env, args.local, section, key, value)


def config_show(env: str, local: Path | None) -> int:
    try:
        config = load_config(env, local_file=local)
    except ConfigError as exc:
        print(f"error: the {env} config is invalid:\n{exc}", file=sys.stderr)
        return 2
    for section, keys in SCHEMA.items():
        print(f"[{section}]")
        for key in keys:
            value = config[section][key]
            shown = "******** (secret)" if is_secret(key) and value != "" else hide_password(str(value))
            print(f"{key} = {shown}".rstrip() + f"    # {config.origins[(section, key)]}")
    return 0


{% if cookiecutter.database != "none" -%}
def database_backup(args: argparse.Namespace) -> int:
    import json
    import sqlite3

    from . import backup

    try:
        if args.command == "migrate":
            env = args.env or os.environ.get("{{ cookiecutter.package_name | upper }}_ENV", "prod")
            target = args.backup or os.environ.get("{{ cookiecutter.package_name | upper }}_BACKUP_FILE")
            return backup.migrate(env, Path(target) if target else None)
        if args.command == "db-revision":
            found = backup.live_revisions(args.env)
            print(json.dumps({"revisions": None if found is None else sorted(found)}))
        elif args.command == "db-backup":
            print(backup.backup(args.env, args.to))
        elif args.command == "db-nightly-backup":
            env = args.env or os.environ.get("{{ cookiecutter.package_name | upper }}_ENV", "prod")
            from .config import SHARED_DIR_VAR
            shared = os.environ.get(SHARED_DIR_VAR)
            if not shared:
                raise backup.BackupError(f"{SHARED_DIR_VAR} is not set: the nightly backup runs on a host, as a job")
            keep = load_config(env)["deploy"]["keep_backups"]
            print(backup.nightly(env, Path(shared) / "backups", keep))
        elif args.check:
            print(backup.check_restore(args.env, args.source))
        else:
            print(backup.restore(args.env, args.source))
    except (backup.BackupError, ConfigError, sqlite3.Error, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


{% endif -%}
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="{{ cookiecutter.package_name }}")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="validate the INI files of one or every environment")
    check.add_argument("--env", help="one environment (default: every config/<env>.ini)")
    check.add_argument("--config-dir", type=Path, help="directory holding base.ini and <env>.ini")
    check.add_argument("--local", type=Path, help="host-local file to merge last (secrets)")
    check.add_argument("--runtime", action="store_true", help="also apply the checks made at start-up (prod secret_key)")
    for name, text in (("config-set", "set SECTION.KEY in the host-local file to the value on stdin"),
                       ("config-unset", "remove SECTION.KEY from the host-local file")):
        edit = commands.add_parser(name, help=text)
        edit.add_argument("setting", help="section.key, e.g. app.secret_key")
        edit.add_argument("--env", required=True)
        edit.add_argument("--local", type=Path, required=True)
    show = commands.add_parser("config-show", help="the effective config, secret values masked")
    show.add_argument("--env", required=True)
    show.add_argument("--local", type=Path)
{%- if cookiecutter.database != "none" %}
    backup = commands.add_parser("db-backup", help="back up the database of --env into FILE (remote.sh)")
    backup.add_argument("--env", required=True)
    backup.add_argument("--to", type=Path, required=True)
    restore = commands.add_parser("db-restore", help="replace the database of --env with a backup (remote.sh)")
    restore.add_argument("--env", required=True)
    restore.add_argument("--from", dest="source", type=Path, required=True)
    restore.add_argument("--check", action="store_true", help="only check that this release knows the backup's "
                         "schema revision (the host does, unless FORCE=1)")
    nightly = commands.add_parser("db-nightly-backup", help="the nightly job: back up into shared/backups/nightly-"
                                  "<time>.backup, keeping [deploy] keep_backups of those")
    nightly.add_argument("--env", help="default: {{ cookiecutter.package_name | upper }}_ENV, else prod")
    revision = commands.add_parser("db-revision", help="the database's schema revisions now, as JSON, read only "
                                   "(make plan)")
    revision.add_argument("--env", required=True)
    migrate = commands.add_parser("migrate", help="apply pending migrations after a backup (the deploy's release command)")
    migrate.add_argument("--env", help="default: {{ cookiecutter.package_name | upper }}_ENV, else prod")
    migrate.add_argument("--backup", type=Path, help="back up here first, when a migration is pending "
                         "(default: {{ cookiecutter.package_name | upper }}_BACKUP_FILE, set by the deploy; none: no backup)")
{%- endif %}
    args = parser.parse_args(argv)
    if args.command == "config-set":
        return config_set(args)
    if args.command == "config-unset":
        return edit_local(args.env, args.local, *parse_setting(args.setting), None)
    if args.command == "config-show":
        return config_show(args.env, args.local)
{%- if cookiecutter.database != "none" %}
    if args.command in ("db-backup", "db-nightly-backup", "db-restore", "db-revision", "migrate"):
        return database_backup(args)
{%- endif %}
    envs = [args.env] if args.env else list(environments(args.config_dir))
    return check_config(envs, args.config_dir, args.local, args.runtime)


if __name__ == "__main__":
    sys.exit(main())
