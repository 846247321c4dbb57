"""Background workers ([process:NAME]) and scheduled jobs ([schedule:NAME]): their unit
names and the text of their units, as pure functions of Units and the release's config.

A worker is one template unit, `<web unit>-<name>@.service`, and its instances
`<web unit>-<name>@1.service` … `@<count>`: one file whatever the count, each instance a
process of its own that systemd restarts and starts at boot (each is enabled), and the
web unit's name first, so that two apps (or two environments, or two directories) on one
host never share a worker's unit. A job is `<web unit>-job-<name>.timer` and the oneshot
`<web unit>-job-<name>.service` it starts: a oneshot that still runs is not started again,
so a run never overlaps the one before. Both run the host program (remote.sh exec_worker,
exec_job), which resolves `current` when it starts, under the web unit's sandbox.
"""
import re
from dataclasses import dataclass

from host.systemd import Units

NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")
INSTANCE = re.compile(r"(?P<name>[a-z][a-z0-9-]{0,39})@(?P<index>[1-9][0-9]*)")
SETTLE_SECONDS = 2.0  # a worker that is still up this long after its start counts as up


@dataclass(frozen=True)
class Worker:
    name: str
    command: str
    count: int = 1


@dataclass(frozen=True)
class Job:
    name: str
    when: str
    command: str
    timeout: int = 3600
    without_systemd: str = "refuse"  # or "skip": the deploy goes on without it, saying so


@dataclass(frozen=True)
class Spec:
    """A release's workers and jobs, from its config (config.py host ENV: its "workers")."""
    stop_timeout: int = 10
    workers: tuple[Worker, ...] = ()
    jobs: tuple[Job, ...] = ()

    @classmethod
    def from_json(cls, data: dict) -> "Spec":
        workers = tuple(Worker(name, str(keys["command"]), int(keys.get("count", 1)))
                        for name, keys in sorted(data.get("processes", {}).items()))
        jobs = tuple(Job(name, str(keys["when"]), str(keys["command"]), int(keys.get("timeout", 3600)),
                         str(keys.get("without_systemd", "refuse")))
                     for name, keys in sorted(data.get("schedules", {}).items()))
        return cls(int(data.get("stop_timeout", 10)), workers, jobs)

    def worker(self, name: str) -> Worker | None:
        return next((w for w in self.workers if w.name == name), None)

    def job(self, name: str) -> Job | None:
        return next((j for j in self.jobs if j.name == name), None)


def template(unit: str, name: str) -> str:
    return f"{unit}-{name}@.service"


def instance(unit: str, name: str, index: int) -> str:
    return f"{unit}-{name}@{index}.service"


def instances(unit: str, spec: Spec) -> list[str]:
    """Every worker instance SPEC asks for, in order."""
    return [instance(unit, w.name, i) for w in spec.workers for i in range(1, w.count + 1)]


def job_units(unit: str, name: str) -> tuple[str, str]:
    """The job's (service, timer)."""
    return f"{unit}-job-{name}.service", f"{unit}-job-{name}.timer"


def instance_of(unit: str, file_name: str) -> tuple[str, int] | None:
    """`<unit>-mail@2.service` is ("mail", 2); None for any other file name."""
    if not (file_name.startswith(f"{unit}-") and file_name.endswith(".service")):
        return None
    match = INSTANCE.fullmatch(file_name[len(unit) + 1:-len(".service")])
    return (match["name"], int(match["index"])) if match else None


def is_ours(unit: str, file_name: str) -> bool:
    """A worker template or a job unit of this app (never the web unit or its log timer)."""
    rest = file_name[len(unit) + 1:] if file_name.startswith(f"{unit}-") else ""
    if rest.endswith("@.service"):
        return bool(NAME.fullmatch(rest[:-len("@.service")]))
    if rest.startswith("job-") and rest.endswith((".service", ".timer")):
        return bool(NAME.fullmatch(rest[len("job-"):].rsplit(".", 1)[0]))
    return False


def wanted_by(kind: str) -> str:
    """Where an enabled unit's link goes: a user manager has no multi-user.target."""
    return "default.target" if kind == "user" else "multi-user.target"


def worker_service(units: Units, name: str, stop_timeout: int) -> str:
    """Restart=always with no start limit, as the web unit: a worker that cannot reach its
    queue at boot keeps trying. TERM to every process of the instance on stop (the default
    control-group kill), KILL after stop_timeout. The host program starts, as the main
    process, the command from `current` and writes its output to the worker's log; it exits
    128 + N when the command died of signal N, and 143 (TERM) is a stop, not a failure."""
    network = ["After=network.target"] if units.kind == "user" else [
        "After=network-online.target", "Wants=network-online.target"]
    backoff = ["RestartSteps=5", "RestartMaxDelaySec=30"] if units.systemd_version >= 254 else []
    return "\n".join([
        f"# Written by {units.dist}'s deploy/remote.sh for {units.app_dir} ([process:{name}]); every deploy rewrites it.",
        "[Unit]", f"Description={units.dist} ({units.env}) worker {name} %i from {units.app_dir}", *network,
        "StartLimitIntervalSec=0", "",
        "[Service]", "Type=exec", f"ExecStart=/bin/sh {units.app_dir}/remote.sh exec_worker {name} %i",
        "Restart=always", "RestartSec=1", *backoff, f"TimeoutStopSec={stop_timeout}",
        "SuccessExitStatus=143", *units.common(), "",
        "[Install]", f"WantedBy={wanted_by(units.kind)}", ""])


def job_service(units: Units, job: Job) -> str:
    """A oneshot: started again while it runs, it is not run twice. TimeoutStartSec is the
    job's timeout (then TERM, and KILL after the web unit's stop timeout)."""
    return "\n".join([
        (f"# Written by {units.dist}'s deploy/remote.sh for {units.app_dir} ([schedule:{job.name}]); "
         "every deploy rewrites it."),
        "[Unit]", f"Description={units.dist} ({units.env}) job {job.name} from {units.app_dir}", "",
        "[Service]", "Type=oneshot", f"ExecStart=/bin/sh {units.app_dir}/remote.sh exec_job {job.name}",
        f"TimeoutStartSec={job.timeout}", f"TimeoutStopSec={units.stop_timeout}", *units.common(), ""])


def job_timer(units: Units, job: Job) -> str:
    """AccuracySec=1s: systemd's default of a minute would blur a job every few seconds."""
    return "\n".join([
        "[Unit]", f"Description={units.dist} ({units.env}) job {job.name}: {job.when}", "",
        "[Timer]", f"OnCalendar={job.when}", "AccuracySec=1s", "", "[Install]", "WantedBy=timers.target", ""])


def files(units: Units, spec: Spec, jobs_here: bool = True) -> dict[str, str]:
    """Every worker and job unit file SPEC asks for, by name (jobs only on the jobs host)."""
    found = {template(units.unit, w.name): worker_service(units, w.name, spec.stop_timeout) for w in spec.workers}
    for job in spec.jobs if jobs_here else ():
        service, timer = job_units(units.unit, job.name)
        found[service], found[timer] = job_service(units, job), job_timer(units, job)
    return found


def log_name(kind: str, name: str, index: int = 0) -> str:
    """The log of a worker's instance (worker-mail@1.log) or of a job (job-cleanup.log), in shared/log."""
    return f"worker-{name}@{index}.log" if kind == "worker" else f"job-{name}.log"
