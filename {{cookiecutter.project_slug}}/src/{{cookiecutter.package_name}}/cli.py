"""Command line: `{{ cookiecutter.package_name }} check-config [--env ENV]`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ENVIRONMENTS, ConfigError, load_config, runtime_errors


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="{{ cookiecutter.package_name }}")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="validate the INI files of one or every environment")
    check.add_argument("--env", choices=ENVIRONMENTS, help="one environment (default: all)")
    check.add_argument("--config-dir", type=Path, help="directory holding base.ini and <env>.ini")
    check.add_argument("--local", type=Path, help="host-local file to merge last (secrets)")
    check.add_argument("--runtime", action="store_true", help="also apply the checks made at start-up (prod secret_key)")
    args = parser.parse_args(argv)
    envs = [args.env] if args.env else list(ENVIRONMENTS)
    return check_config(envs, args.config_dir, args.local, args.runtime)


if __name__ == "__main__":
    sys.exit(main())
