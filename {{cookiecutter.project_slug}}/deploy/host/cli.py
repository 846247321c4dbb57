"""The command registry: dispatch, help, the make targets and the history all read COMMANDS."""
import argparse
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str
    run: Callable[..., int | None]
    help: str
    arguments: tuple = ()  # (flags, argparse keywords) pairs
    target: bool = False  # a make target of the same name runs it (make help shows its help)
    recorded: bool = False  # changes what runs: one line in state/deploys.log
    context: bool = True  # needs the app's directory and settings (a Host)


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, *arguments: tuple, target: bool = False, recorded: bool = False,
            context: bool = True) -> Callable:
    """Register the decorated function as host command NAME; ARGUMENTS are arg(...) pairs."""
    def register(run: Callable[..., int | None]) -> Callable:
        COMMANDS[name] = Command(name, run, help, arguments, target, recorded, context)
        return run
    return register


def arg(*flags: str, **kwargs) -> tuple:
    return flags, kwargs


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="remote.sh", description="the host program")
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS.values():
        sub = commands.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        for flags, kwargs in cmd.arguments:
            sub.add_argument(*flags, **kwargs)
    return top


@command("help", "list the commands", context=False)
def cmd_help(args: argparse.Namespace) -> int:
    print("remote.sh COMMAND [ARGS]; the commands:")
    for cmd in COMMANDS.values():
        print(f"  {cmd.name:<14} {cmd.help}")
    return 0


def target_name(cmd: Command) -> str:
    """The make target of a host command: lock_status is make lock-status."""
    return cmd.name.replace("_", "-")


def targets() -> list[Command]:
    """The commands that are make targets of the same name."""
    return [cmd for cmd in COMMANDS.values() if cmd.target]


@command("targets", "for the Makefile: its HOST_COMMANDS line (--make), or their make help lines (--help)",
         arg("--make", action="store_true"), arg("--help-lines", action="store_true"), context=False)
def cmd_targets(args: argparse.Namespace) -> int:
    if args.make:
        print(f"HOST_COMMANDS := {' '.join(target_name(cmd) for cmd in targets())}")
    for cmd in targets() if args.help_lines else []:
        print(f"  {target_name(cmd):<13} {cmd.help}")
    return 0


def main(argv: list[str]) -> int:
    from host import commands  # noqa: F401 (registers the commands)
    from host.context import Failure, Host

    given = argv[0] if argv else "help"
    name = "help" if given in ("-h", "--help") else given.replace("-", "_")
    if name not in COMMANDS:
        print(f"error: unknown command {given!r} ({' '.join(COMMANDS)})", file=sys.stderr)
        return 1
    cmd = COMMANDS[name]
    args = parser().parse_args([name, *argv[1:]])
    if not cmd.context:
        return cmd.run(args) or 0
    # The ssh client may go (Ctrl-C, a dropped link) while we finish the job: we keep going,
    # and output to it is dropped (Host.say). INT and TERM end us through Host.finish.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        host = Host.from_environment(name)
    except Failure as failure:
        print(f"error: {failure}", file=sys.stderr)
        return failure.status
    return host.run(cmd, args)


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
