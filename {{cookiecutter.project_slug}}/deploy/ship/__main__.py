"""The deploy program: every make target that reaches a host runs here.

    python3 deploy/ship --project NAME VERSION PACKAGE MIN_PYTHON TARGET

The variables come from make (its command line and environment reach us as environment
variables) and from config/<APP_ENV>.ini (ship/settings.py). Standard library only: it
runs with the python3 that runs make, before any venv exists.
"""
import os
import re
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # deploy/: ship, host, target.py, ...

from ship.fleet import each_failed
from ship.messages import ShipError, message
from ship.remote import Remote, deploy_who, say
from ship.settings import Project, read
from ship.targets import TARGETS, register_host_commands


def host_targets() -> list[str]:
    """The host commands that are make targets of the same name: the host program's registry."""
    import host.commands  # noqa: F401 (registers them)
    from host.cli import target_name, targets
    return [target_name(cmd) for cmd in targets()]


def run(project: Project, goal: str) -> int:
    register_host_commands(host_targets())
    if goal not in TARGETS:
        raise ShipError(f"no such target: {goal} (make help lists them)")
    target = TARGETS[goal]
    settings = read(project, dict(os.environ), goal)
    names = settings.hosts or [settings["REMOTE_HOST"]]
    if settings.hosts and target.several == "one":
        raise ShipError(message("one_host_only", goal=goal, hosts=" ".join(settings.hosts)))
    if not re.fullmatch(r"[1-9][0-9]*", settings["BATCH"]):
        raise ShipError(message("bad_batch", batch=settings["BATCH"]))
    if target.several == "rollout":
        return target.run(settings, names)
    if len(names) == 1 and not settings.hosts:
        return target.run(settings, Remote(settings, names[0], deploy_who()))
    failed = []
    for name in names:
        say(f"==> {name}")
        if target.run(settings, Remote(settings, name, deploy_who())) != 0:
            failed.append(name)
    return each_failed(goal, names, failed)


def main(argv: list[str]) -> int:
    if len(argv) != 6 or argv[0] != "--project":
        print("usage: deploy/ship --project NAME VERSION PACKAGE MIN_PYTHON TARGET", file=sys.stderr)
        return 64
    name, version, package, min_python, goal = argv[1:]
    project = Project(name, version, package, min_python, make=os.environ.get("MAKE", "make"))
    try:
        return run(project, goal)
    except ShipError as refused:
        if str(refused):
            say(str(refused) if refused.plain else f"error: {refused}", err=True)
        return refused.status
    except KeyboardInterrupt:
        return 130
    finally:
        if os.environ.get("SHIP_CPU"):  # bench/traffic.py: this program's own CPU, apart from its children's
            used = resource.getrusage(resource.RUSAGE_SELF)
            say(f"  ship cpu: {used.ru_utime + used.ru_stime:.3f}s")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
