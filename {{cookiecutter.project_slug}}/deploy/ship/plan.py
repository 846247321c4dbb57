"""`make plan` (or `make deploy DRY_RUN=1`): what a deploy would do on each host, asking
every host and changing nothing there (no lock, no upload, no file written): the probe
runs from the bootstrap sent on stdin, the host's facts from the host program in memory.
Exits 0 when the deploy would go ahead everywhere, else 1, each reason named."""
from __future__ import annotations

import ast
import json
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import target as targets  # deploy/target.py
from host.plan import DEPLOY_STEPS
from ship import local
from ship.remote import Remote, deploy_who, say
from ship.settings import Settings


@dataclass
class HostPlan:
    name: str
    target: str = ""
    facts: dict = field(default_factory=dict)  # the probe's
    found: dict = field(default_factory=dict)  # host/plan.py's
    refusals: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def ask(settings: Settings, name: str) -> HostPlan:
    plan, remote = HostPlan(name), Remote(settings, name, deploy_who())
    probed = remote.probe_readonly()
    if probed.status != 0:
        plan.refusals.append(f"cannot reach {remote.target} over ssh" if probed.status == 255
                             else f"the probe failed there (exit {probed.status})")
        return plan
    try:
        plan.facts = json.loads(probed.output)
    except ValueError:
        plan.refusals.append(f"the probe answered with no facts: {probed.output.strip()[-200:]!r}")
        return plan
    try:
        plan.target = targets.host_target(plan.facts, name, settings.project.min_python)
    except targets.TargetError as exc:
        plan.refusals.append(str(exc).removesuffix("; nothing was uploaded"))
        return plan
    found = remote.run_in_memory("plan")
    if found.status != 0:
        plan.refusals.append(f"the host program could not look there (exit {found.status})")
        return plan
    try:
        plan.found = json.loads(found.output)
    except ValueError:
        plan.refusals.append(f"the host program answered with no facts: {found.output.strip()[-200:]!r}")
    return plan


def release_wheels(tarball: Path) -> dict[str, tuple[str, int]]:
    """{wheel file name: (sha256, size)} of a packed release."""
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
        sums_member = next(m for m in members if m.name.endswith("/SHA256SUMS"))
        top = sums_member.name.split("/", 1)[0]
        sums = dict(reversed(line.split("  ", 1)) for line in tar.extractfile(sums_member).read().decode().splitlines())
    sizes = {m.name.removeprefix(top + "/"): m.size for m in members if m.isfile()}
    return {name.removeprefix("wheels/"): (digest, sizes.get(name, 0)) for name, digest in sums.items()
            if name.startswith("wheels/") and name.endswith(".whl")}


def dependencies(wheels, app: str) -> set[str]:
    """The dependency wheels of a release: all but the app's own."""
    return {name for name in wheels if not name.lower().startswith(app + "-")}


def describe(settings: Settings, plan: HostPlan, tarball: Path, app: str) -> None:
    """The plan's lines for one host, and its refusals."""
    current, lock = plan.found.get("current") or "none", plan.found.get("lock")
    new = release_wheels(tarball)
    cached = set(plan.facts.get("cached", []))
    missing = {n: size for n, (digest, size) in new.items() if digest not in cached}
    have = plan.found.get("wheels", {})
    changed = sorted(n for n in dependencies(new, app) if have.get(n) != new[n][0])
    gone = sorted(dependencies(have, app) - dependencies(new, app))
    p = settings.project
    plan.lines += [f"now: {current}", f"would go: {p.name} {p.version} for {plan.target} ({tarball.name})"]
    upload = lean_size(settings, plan, tarball)
    plan.lines.append(f"upload: {upload}, {len(missing)} wheel(s) the host lacks" + (":" if missing else ""))
    plan.lines += [f"  {n}  {s // 1024} KiB" for n, s in sorted(missing.items(), key=lambda i: i[0].lower())]
    if current == "none":
        plan.lines.append("dependencies: first deploy: every wheel installed (linked where this host installed it for another app)")
    elif changed or gone:
        words = [*(f"+{n}" for n in changed), *(f"-{n}" for n in gone)]
        plan.lines.append(f"dependencies: changed ({' '.join(words)}): those installed, the rest linked "
                          "from the running release")
    else:
        plan.lines.append("dependencies: unchanged: linked from the running release, the app's wheel installed")
    if lock is None:
        plan.lines.append("lock: free")
    elif lock.get("alive"):
        holder = " ".join(f"{k}={v}" for k, v in lock.items() if k != "alive")
        plan.lines.append(f"lock: held ({holder})")
        plan.refusals.append(f"another deploy holds the lock ({holder})")
    else:
        plan.lines.append("lock: stale (its holder is gone): the deploy takes it over")
    hold = plan.found.get("hold")
    if hold:
        said = f"held by {hold.get('who')} since {hold.get('when')}: {hold.get('message')}"
        plan.lines.append(f"hold: {said}")
        plan.refusals.append(f"deploys are {said} (make unlock lifts the hold)")
    if plan.found.get("environment_refusal"):
        plan.refusals.append(plan.found["environment_refusal"])
    describe_database(settings, plan)
    describe_workers(settings, plan)
    command = settings.setting("deploy", "release_command").strip()
    # workers: a systemd host's deploy always applies them (it removes the units a release no longer names)
    skipped = {"release_command": not command, "workers": not plan.found.get("systemd")}
    plan.lines.append(f"steps: upload, {', '.join(s for s in DEPLOY_STEPS if not skipped.get(s))}")


def describe_workers(settings: Settings, plan: HostPlan) -> None:
    """As the host would refuse a release: workers, or jobs that do not say
    without_systemd = skip, on a host without systemd."""
    if "systemd" not in plan.found or plan.found["systemd"]:
        return
    config = settings.config
    refused = [*(f"[process:{n}]" for n in config.processes),
               *(f"[schedule:{n}]" for n, keys in config.schedules.items() if keys["without_systemd"] != "skip")]
    if refused:
        plan.refusals.append(f"{', '.join(refused)} need systemd, and {plan.name} does not run it")


def migrations(package: str) -> dict[str, tuple[str, ...]]:
    """This project's Alembic revisions: {revision: the revisions it follows}, from the
    migration files' literal `revision` and `down_revision` (no Alembic here)."""
    graph = {}
    for path in sorted((Path("src") / package / "migrations" / "versions").glob("*.py")):
        found = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                name = node.targets[0] if isinstance(node, ast.Assign) else node.target
                if isinstance(name, ast.Name) and name.id in ("revision", "down_revision"):
                    found[name.id] = ast.literal_eval(node.value)
        if isinstance(found.get("revision"), str):
            down = found.get("down_revision")
            graph[found["revision"]] = (down,) if isinstance(down, str) else tuple(down or ())
    return graph


def pending(graph: dict[str, tuple[str, ...]], at: set[str]) -> tuple[list[str], list[str]]:
    """The revisions a database at AT still lacks, oldest first, and those of AT this
    project does not know (a newer release's schema)."""
    done, todo = set(), list(at & graph.keys())
    while todo:
        revision = todo.pop()
        if revision not in done:
            done.add(revision)
            todo += [r for r in graph.get(revision, ()) if r in graph]
    order, seen = [], set()

    def visit(revision: str) -> None:
        if revision in seen:
            return
        seen.add(revision)
        for parent in graph[revision]:
            if parent in graph:
                visit(parent)
        order.append(revision)
    for revision in sorted(graph):
        visit(revision)
    return [r for r in order if r not in done], sorted(at - graph.keys())


def describe_database(settings: Settings, plan: HostPlan) -> None:
    found = plan.found.get("database", {})
    if not found:
        return
    if "unknown" in found:
        plan.lines.append(f"migrations: unknown ({found['unknown']})")
        return
    graph = migrations(settings.project.package)
    at = found.get("revisions")
    todo, unknown = pending(graph, set(at or ()))
    command = settings.setting("deploy", "release_command").strip()
    if unknown:
        plan.lines.append(f"migrations: the database is at {', '.join(unknown)}, which this release does not know")
        plan.refusals.append(f"the database's schema revision {', '.join(unknown)} is newer than this release's "
                             "migrations: deploy the release that made it")
    elif not todo:
        plan.lines.append(f"migrations: none pending (the database is at {', '.join(sorted(at or ())) or 'none'})")
    else:
        if not command:
            then = "but no release_command runs them"
        elif at is None:
            then = "no backup (the first migration creates the database)"
        elif "migrate" in command:
            then = "a backup first (the release command takes one when a migration is pending)"
        else:
            then = f"by the release command ({command}), which decides about a backup"
        plan.lines.append(f"migrations: {len(todo)} pending: {', '.join(todo)}; {then}")


def lean_size(settings: Settings, plan: HostPlan, tarball: Path) -> str:
    """The lean upload's size, from deploy/pack.py lean (here, on this machine), or why it
    would not fit on the host's disk (then a refusal)."""
    path = local.facts_file(plan.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan.facts))
    out = path.with_suffix(".plan.tar.gz")
    done = subprocess.run([".venv/bin/python", "deploy/pack.py", "lean", str(tarball), str(path), str(out)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["pack.py lean failed"])[-1].removeprefix("error: ")
        plan.refusals.append(said)
        return "would not fit"
    size = out.stat().st_size
    out.unlink()
    return f"{size // 1024} KiB"


def plan(settings: Settings, names: list[str]) -> int:
    from ship.fleet import Fleet  # the same threads as a rollout
    p = settings.project
    say(f"==> plan: {p.name} {p.version} to {' '.join(names)}, {settings.env}; nothing is changed on any host")
    fleet = Fleet(settings, names)
    plans = fleet.each(lambda h: ask(settings, h.name))
    wanted = [pl.target for pl in plans if pl.target]
    packed = local.pack(settings, wanted) if wanted else {}
    app = p.name.replace("-", "_").lower()
    ok = True
    for pl in plans:
        if pl.target:
            describe(settings, pl, packed[pl.target], app)
        say(f"--- {pl.name}" + (f" ({pl.target})" if pl.target else ""))
        for line in pl.lines:
            say(f"  {line}")
        for reason in pl.refusals:
            say(f"  refused: {reason}")
        ok = ok and not pl.refusals
    say("plan: the deploy would go ahead" if ok else "plan: the deploy would be refused (above)")
    return 0 if ok else 1
