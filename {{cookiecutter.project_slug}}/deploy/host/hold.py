"""A deliberate hold (make lock MESSAGE="…"): while it is there, every command that takes
the deploy lock is refused, naming who holds it, since when and why. It is a file in
state/ (the deploying account's, never the app's), apart from the deploy lock: a stale
deploy lock is taken over, a hold never is; only make unlock lifts it."""
import json
import os
import time
from pathlib import Path

from host.cli import arg, command
from host.context import Failure, Host


def hold_file(host: Host) -> Path:
    return host.state / "hold"


def read_hold(path: Path) -> dict | None:
    """The hold's who, when and message; None when there is none (or it is not ours)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Failure(f"cannot read the hold {path}: {exc.strerror}") from None
    with os.fdopen(fd) as handle:
        try:
            held = json.load(handle)
        except ValueError:
            held = {"who": "?", "when": "?", "message": f"(unreadable: {path})"}
    return held if isinstance(held, dict) else {"who": "?", "when": "?", "message": str(held)}


def describe(held: dict) -> str:
    return f"held by {held.get('who', '?')} since {held.get('when', '?')}: {held.get('message') or '(no message)'}"


def refusal(host: Host) -> str | None:
    """The sentence that refuses a command while a hold is there, else None."""
    held = read_hold(hold_file(host))
    if held is None:
        return None
    return f"deploys to this host are {describe(held)}; make unlock lifts the hold"


def take_hold(path: Path, who: str, message: str, when: str) -> bool:
    """Write the hold, once: False when one is there already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump({"who": who, "when": when, "message": message}, handle)
    return True


def check_message(message: str) -> str:
    message = message.strip()
    if not message:
        raise Failure('say why: make lock MESSAGE="an incident: no deploys until it is fixed"', 2)
    if len(message) > 300 or not message.isprintable():
        raise Failure("MESSAGE must be one line of printable text, at most 300 characters", 2)
    return message


@command("lock", "hold every deploy, rollback, restart, start, stop, config change, restore and run-job: MESSAGE says why",
         arg("message", nargs="?", default=""), target=True)
def cmd_lock(host: Host, args) -> None:
    message = check_message(args.message)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if not take_hold(hold_file(host), host.settings.who, message, when):
        raise Failure(f"a hold is there already ({describe(read_hold(hold_file(host)) or {})}); make unlock lifts it")
    host.say(f"held: deploys to this host are refused until make unlock ({message})")


@command("lock_status", "whether deploys are held here, by whom, since when and why; and the deploy lock", target=True)
def cmd_lock_status(host: Host, args) -> None:
    from host.releases import describe as describe_lock
    from host.releases import lock_info
    held = read_hold(hold_file(host))
    host.say(f"hold: {describe(held)}" if held else "hold: none")
    host.say(f"deploy lock: {describe_lock(lock_info(host.lock))}" if host.lock.is_dir() else "deploy lock: none")


def lift(host: Host) -> bool:
    """make unlock: remove the hold, if there is one."""
    held = read_hold(hold_file(host))
    if held is None:
        return False
    hold_file(host).unlink()
    host.say(f"hold lifted ({describe(held)})")
    return True
