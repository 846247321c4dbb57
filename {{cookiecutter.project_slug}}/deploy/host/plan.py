"""`make plan`: what a deploy would find on this host, as JSON, and nothing written.

The deploy program runs this from memory (the bundle on stdin, in a memfd: no file on the
host), so a host whose copy of the host program is older still answers, unchanged."""
import json
import os
import subprocess
import sys
from pathlib import Path

from host import PACKAGE, VARS, sandbox
from host.cli import command
from host.context import Failure, Host, Settings
from host.database import has_database
from host.hold import hold_file, read_hold
from host.releases import holder_alive, lock_info
from host.serve import units
from host.systemd import Service, app_account

# A deploy's steps, in the order it runs them (commands.py: cmd_deploy; serve.py: activate).
DEPLOY_STEPS = ("lock", "install", "smoke_boot", "release_command", "smoke_paths", "switch", "handover", "workers",
                "prune")


def release_wheels(release: Path) -> dict[str, str]:
    """{wheel file name: sha256} of a release, from its SHA256SUMS; {} when unreadable."""
    try:
        lines = (release / "SHA256SUMS").read_text().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        digest, _, name = line.partition("  ")
        if name.startswith("wheels/") and name.endswith(".whl"):
            found[name.removeprefix("wheels/")] = digest
    return found


def database_revisions(host: Host, current: str | None) -> dict:
    """The database's schema revisions now, asked of the current release's own command line
    (`<package> db-revision`: read only), as the app's account; {} for a project without a
    database, or "unknown" and why."""
    directory = host.releases / current if current else None
    if directory is None or not has_database(directory):
        return {}
    program = directory / "venv" / "bin" / PACKAGE
    # In the app's sandbox, as everything of the app runs (a root deploy's: its own account). A
    # plan detects nothing (Service.detect may turn lingering on): a root deploy under systemd
    # runs the system unit, any other deploy the app as its own account.
    env = host.settings.env
    kind = "system" if os.getuid() == 0 and Path("/run/systemd/system").is_dir() else "daemon"
    host.service = Service(kind, Service.unit_name(host.app, env), app_account(env) if kind == "system" else "")
    host.app_environment()
    argv = sandbox.command(host.service, units(host), [str(program), "db-revision", "--env", env], str(directory),
                           dict(os.environ), VARS)
    asked = subprocess.run(argv, cwd=directory, capture_output=True, text=True, check=False)
    if asked.returncode != 0:
        said = (asked.stderr.strip().splitlines() or [f"exit {asked.returncode}"])[-1]
        return {"unknown": said.removeprefix("error: ")}
    return json.loads(asked.stdout)


def facts(host: Host) -> dict:
    """Only reads: the current release and its wheels, the deploy lock and a hold, the
    database's revision."""
    current = host.current_id()
    held = lock_info(host.lock) if host.lock.is_dir() else None
    return {
        "current": current,
        "wheels": release_wheels(host.releases / current) if current else {},
        "lock": None if held is None else {**held, "alive": holder_alive(held)},
        "hold": read_hold(hold_file(host)),
        "database": database_revisions(host, current),
        "environment_refusal": host.environment_refusal(),
        "systemd": Path("/run/systemd/system").is_dir(),  # the workers step (it also removes old units)
    }


@command("plan", "what a deploy would find here, as JSON; writes nothing (make plan)", context=False)
def cmd_plan(args) -> int:
    try:
        host = Host(Settings.from_environment(dict(os.environ)), "plan")  # paths only: nothing is made
    except Failure as failure:
        print(f"error: {failure}", file=sys.stderr)
        return failure.status
    print(json.dumps(facts(host)))
    return 0
