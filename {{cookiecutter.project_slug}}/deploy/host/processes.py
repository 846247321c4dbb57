"""Workers and jobs on the host: read from a release's config, their units written, moved to
each new release after the switch, stopped and started with the web app, and shown
(make status, ps, jobs). The unit text is workers.py's; the programs the units run
(exec_worker, exec_job) are runner.py's."""
import dataclasses
import os
import subprocess
import time
from pathlib import Path

from host import release_config
from host.context import Failure, Host
from host.procs import uptime
from host.systemd import Service, Units, quiet, replace_if_changed, systemd_version
from host.workers import (
    SETTLE_SECONDS,
    Spec,
    files,
    instance_of,
    instances,
    is_ours,
    job_units,
    wanted_by,
)

WORKER_FAILED = 3  # make deploy's exit status when the web release serves but a worker does not stay up


def read_spec(host: Host, release: str) -> Spec:
    """RELEASE's workers and jobs, by its own config. A release packed before workers
    existed has none."""
    try:
        found = release_config.read(host, release)["workers"]
    except release_config.Unreadable as error:
        raise Failure(f"cannot read the workers and jobs of {release} ({error.said})") from None
    return Spec.from_json(found) if found else Spec()


def names(spec: Spec) -> str:
    return ", ".join([*(f"[process:{w.name}]" for w in spec.workers), *(f"[schedule:{j.name}]" for j in spec.jobs)])


def check_calendar(when: str) -> str | None:
    """systemd's own word on an OnCalendar expression: None when it takes it, else why not."""
    try:
        said = subprocess.run(["systemd-analyze", "calendar", when], capture_output=True, text=True, check=False)
    except OSError as exc:
        return f"systemd-analyze: {exc.strerror}"
    if said.returncode == 0:
        return None
    return " ".join(said.stderr.split()) or f"systemd-analyze calendar exited {said.returncode}"


def prepare(host: Host, release: str) -> Spec:
    """Before anything changes: RELEASE's workers and jobs, refused without systemd (nothing
    would bring them back after a crash or a reboot) or with a `when` systemd does not take."""
    spec = read_spec(host, release)
    if not spec.workers and not spec.jobs:
        return spec
    from host.serve import UNCHANGED
    if host.service.kind == "daemon":
        return without_systemd(host, release, spec)
    for job in spec.jobs:
        why = check_calendar(job.when)
        if why:
            (host.releases / release / ".refused").touch()
            raise Failure(f"[schedule:{job.name}] when = {job.when} is not a calendar expression systemd takes "
                          f"({why}); release {release}: {UNCHANGED}")
    return spec


def without_systemd(host: Host, release: str, spec: Spec) -> Spec:
    """No cron emulation: workers, and jobs, are refused (nothing would bring them back or run
    them), but a job that says `without_systemd = skip` (the bake's nightly backup): the
    deploy goes on without it, and says so every time."""
    from host.serve import UNCHANGED
    refused = [f"workers ({', '.join(w.name for w in spec.workers)})"] if spec.workers else []
    jobs = [j.name for j in spec.jobs if j.without_systemd != "skip"]
    refused += [f"jobs ({', '.join(jobs)})"] if jobs else []
    if refused:
        (host.releases / release / ".refused").touch()
        raise Failure(f"release {release} has {' and '.join(refused)}, which need systemd to bring them back after a "
                      f"crash or a reboot and to run them on time, and here {host.service.why}; {UNCHANGED}")
    host.say(f"  jobs: not run on this host ({names(spec)}): they need a systemd timer, and here {host.service.why}")
    return Spec(spec.stop_timeout)


def units_of(host: Host) -> Units:
    from host.serve import units
    return dataclasses.replace(units(host), systemd_version=systemd_version())


def enabled_instances(service: Service) -> list[str]:
    """The worker instances enabled here (their links in the target's .wants/), in order."""
    wants = service.unit_dir / f"{wanted_by(service.kind)}.wants"
    try:
        found = [n for n in os.listdir(wants) if instance_of(service.unit, n)]
    except OSError:
        return []
    return sorted(found, key=lambda n: instance_of(service.unit, n))


def present(service: Service) -> list[str]:
    """The worker templates and job units of this app in the unit directory."""
    try:
        return sorted(n for n in os.listdir(service.unit_dir) if is_ours(service.unit, n))
    except OSError:
        return []


def systemctl(host: Host, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*host.service.systemctl, *args], capture_output=True, text=True, check=False)


def show(host: Host, names: list[str], *props: str) -> dict[str, dict[str, str]]:
    """systemctl show of NAMES (key=value, a blank line between units), by unit name."""
    if not names:
        return {}
    text = systemctl(host, "show", "-p", "Id", *(f"-p{p}" for p in props), *names).stdout
    found = {}
    for block in text.split("\n\n"):
        pairs = dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
        if pairs.get("Id"):
            found[pairs["Id"]] = pairs
    return found


def apply(host: Host, spec: Spec, restart: bool = True) -> None:
    """SPEC's units where they changed, what it no longer names stopped and removed, then
    every worker restarted (stopped with TERM, KILL after worker_stop_timeout, and started
    from the release `current` names now: restart=False starts only those not running)
    and the job timers on. Raises Failure (status 3) naming a worker that does not stay up."""
    service = host.service
    if service.kind == "daemon":
        return
    units = units_of(host)
    wanted = files(units, spec, host.settings.jobs_here)
    desired = instances(service.unit, spec)
    had = present(service)
    going = [n for n in enabled_instances(service) if n not in desired]
    if going:
        quiet([*service.systemctl, "disable", "--quiet", "--now", *going])
    for name in had:
        if name not in wanted and name.endswith("@.service"):  # instances still running, enabled or not
            quiet([*service.systemctl, "stop", name.replace("@.service", "@*.service")])
        elif name not in wanted and name.endswith(".timer"):
            quiet([*service.systemctl, "disable", "--quiet", "--now", name])  # a run in progress finishes
    removed = [n for n in had if n not in wanted]
    for name in removed:
        (service.unit_dir / name).unlink(missing_ok=True)
    service.unit_dir.mkdir(parents=True, exist_ok=True)
    changed = [n for n, text in wanted.items() if replace_if_changed(service.unit_dir / n, text)]
    if (changed or removed) and not quiet([*service.systemctl, "daemon-reload"]):
        raise Failure(f"{' '.join(service.systemctl)} daemon-reload failed after writing the worker and job units")
    if removed:
        host.say(f"  removed the units of what the config no longer names: {', '.join(removed)}")
    timers = [n for n in wanted if n.endswith(".timer")]
    if timers:
        quiet([*service.systemctl, "enable", "--quiet", "--now", *timers])
    if not desired:
        return
    quiet([*service.systemctl, "enable", "--quiet", *desired])
    started = systemctl(host, "restart" if restart else "start", *desired)
    if started.returncode != 0:
        host.say(started.stderr.strip(), err=True)
    # After the start: a manual start may reset the count (Type=exec: the start has returned
    # once the runner runs, before the command can have failed).
    before = {n: s.get("NRestarts", "0") for n, s in show(host, desired, "NRestarts").items()}
    failed = settle(host, desired, before)
    if failed:
        raise Failure(f"worker {', '.join(failed)} did not stay up after its start; the web app serves "
                      f"{host.current_id()} (not rolled back): make ps shows the workers, make logs PROCESS=NAME "
                      "their output", WORKER_FAILED)


def settle(host: Host, desired: list[str], before: dict[str, str]) -> list[str]:
    """The instances of DESIRED that did not run SETTLE_SECONDS without a restart."""
    deadline, failed = time.monotonic() + SETTLE_SECONDS, []
    while True:
        states = show(host, desired, "ActiveState", "SubState", "NRestarts")
        failed = [label(host.service, n) for n in desired
                  if int(states.get(n, {}).get("NRestarts") or 0) > int(before.get(n) or 0)
                  or (states.get(n, {}).get("ActiveState"), states.get(n, {}).get("SubState")) == ("failed", "failed")]
        if failed or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if not failed:
        failed = [label(host.service, n) for n in desired
                  if (states.get(n, {}).get("ActiveState"), states.get(n, {}).get("SubState")) != ("active", "running")]
    return failed


def label(service: Service, unit_name: str) -> str:
    """mail@1 for <unit>-mail@1.service."""
    name, index = instance_of(service.unit, unit_name) or (unit_name, 0)
    return f"{name}@{index}"


def stop_all(host: Host) -> None:
    """make stop: every worker (TERM, then KILL after worker_stop_timeout) and job timer off,
    and left off across reboots; a job that runs is stopped too."""
    service = host.service
    if service.kind == "daemon":
        return
    enabled = enabled_instances(service)
    if enabled:
        quiet([*service.systemctl, "disable", "--quiet", "--now", *enabled])
    had = present(service)
    templates = [n.replace("@.service", "@*.service") for n in had if n.endswith("@.service")]
    timers = [n for n in had if n.endswith(".timer")]
    if timers:
        quiet([*service.systemctl, "disable", "--quiet", "--now", *timers])
    running = [*templates, *(n for n in had if n.endswith(".service") and not n.endswith("@.service"))]
    if running:
        quiet([*service.systemctl, "stop", *running])
    if enabled or timers:
        host.say(f"stopped {len(enabled)} worker(s) and {len(timers)} job timer(s)")


def start_all(host: Host) -> None:
    """make start: the current release's workers (those not running) and job timers."""
    if host.service.kind == "daemon" or host.current_id() is None:
        return
    spec = read_spec(host, host.current_id())
    apply(host, spec, restart=False)
    if spec.workers or spec.jobs:
        host.say(f"started {len(instances(host.service.unit, spec))} worker(s), "
                 f"{len(spec.jobs) if host.settings.jobs_here else 0} job timer(s)")


def release_of(host: Host, pid: int) -> str:
    """The release a process runs from: its working directory, under releases/."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return "?"
    prefix = f"{host.releases}/"
    return cwd[len(prefix):].split("/")[0] if cwd.startswith(prefix) else "?"


def worker_rows(host: Host) -> list[tuple[str, str, str, str, str]]:
    """(process, pid, release, state, uptime) of every enabled worker instance."""
    service = host.service
    if service.kind == "daemon":
        return []
    enabled = enabled_instances(service)
    states = show(host, enabled, "ActiveState", "SubState", "MainPID", "NRestarts")
    rows = []
    for name in enabled:
        state = states.get(name, {})
        pid = int(state.get("MainPID") or 0)
        up = uptime(pid) if pid else "-"
        condition = f"{state.get('ActiveState', '?')}/{state.get('SubState', '?')}"
        if failing(state, pid):
            condition = f"FAILED ({condition}, {state.get('NRestarts', '0')} restarts)"
        rows.append((label(service, name), str(pid or "-"), release_of(host, pid) if pid else "-", condition, up))
    return rows


def failing(state: dict[str, str], pid: int) -> bool:
    """Not running, or restarted within the last settle time twice over: a crash loop."""
    if (state.get("ActiveState"), state.get("SubState")) != ("active", "running") or not pid:
        return True
    if state.get("NRestarts", "0") == "0":
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        started = int(stat.rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        since_boot = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return True
    return since_boot - started < 2 * SETTLE_SECONDS


def templates_without_instances(host: Host) -> list[str]:
    """Workers whose units are here but none of whose instances is enabled (make stop)."""
    enabled = {instance_of(host.service.unit, n)[0] for n in enabled_instances(host.service)}
    unit = host.service.unit
    return [n[len(unit) + 1:-len("@.service")] for n in present(host.service)
            if n.endswith("@.service") and n[len(unit) + 1:-len("@.service")] not in enabled]


def job_rows(host: Host, spec: Spec) -> list[tuple[str, str, str, str, str]]:
    """(job, when, last run, result, next run) of SPEC's jobs here."""
    service = host.service
    names = [u for job in spec.jobs for u in job_units(service.unit, job.name)]
    states = show(host, names, "LastTriggerUSec", "NextElapseUSecRealtime", "Result", "ExecMainStatus",
                  "ActiveState", "ExecMainStartTimestamp")
    rows = []
    for job in spec.jobs:
        unit, timer = job_units(service.unit, job.name)
        s, t = states.get(unit, {}), states.get(timer, {})
        last = s.get("ExecMainStartTimestamp") or t.get("LastTriggerUSec") or "never"
        if s.get("ActiveState") in ("activating", "active"):
            result = "running now"
        elif not s.get("ExecMainStartTimestamp"):
            result = "-"
        else:
            result = f"{s.get('Result', '?')} (exit {s.get('ExecMainStatus', '?')})"
        upcoming = t.get("NextElapseUSecRealtime") or "-"
        if t.get("ActiveState") != "active":
            upcoming = "off (make start)"
        rows.append((job.name, job.when, last or "never", result, upcoming))
    return rows


def table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def check_name(name: str, what: str) -> str:
    from host.workers import NAME
    if not NAME.fullmatch(name) and not (what == "PROCESS" and "@" in name
                                         and NAME.fullmatch(name.partition("@")[0])
                                         and name.partition("@")[2].isdigit()):
        raise Failure(f"{what} must name a worker or job (lower-case letters, digits and -), got {name!r}", 2)
    return name

