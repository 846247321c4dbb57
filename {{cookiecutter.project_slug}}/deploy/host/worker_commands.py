"""The host commands of workers and jobs: make ps, make jobs, make run-job, and what their
units run (exec_worker, exec_job)."""
import os
import subprocess

from host import VARS, sandbox
from host.cli import arg, command
from host.context import Failure, Host
from host.processes import check_name, job_rows, read_spec, release_of, table, templates_without_instances, worker_rows
from host.procs import master_pid, uptime


def need_systemd(host: Host, what: str) -> None:
    if host.service.kind == "daemon":
        raise Failure(f"{what} need a systemd service (nothing else would bring them back after a crash or a reboot), "
                      f"and here {host.service.why}")


@command("ps", "the web master and every worker: pid, release, state and uptime", target=True)
def cmd_ps(host: Host, args) -> int:
    pid = master_pid(host.pidfile, host.releases)
    rows = [("process", "pid", "release", "state", "up")]
    rows.append(("web", str(pid), release_of(host, pid), "running", uptime(pid)) if pid else
                ("web", "-", "-", "stopped", "-"))
    workers = worker_rows(host)
    rows += workers
    rows += [(f"{name}@*", "-", "-", "stopped", "-") for name in templates_without_instances(host)]
    for line in table(rows):
        host.say(line)
    return 1 if not pid or any(row[3].startswith("FAILED") for row in workers) else 0


@command("jobs", "every scheduled job: its last run, its result and its next run", target=True)
def cmd_jobs(host: Host, args) -> None:
    spec = read_spec(host, host.need_current())
    if not spec.jobs:
        host.say(f"no jobs: release {host.current_id()} has no [schedule:NAME] section")
        return
    need_systemd(host, "jobs")
    if not host.settings.jobs_here:
        host.say(f"jobs run on the jobs host ([deploy] jobs_host), not on {host.settings.host_name}")
        return
    for line in table([("job", "when", "last run", "result", "next run"), *job_rows(host, spec)]):
        host.say(line)


@command("run_job", "run JOB=NAME now, in the foreground, with its output", target=True)
def cmd_run_job(host: Host, args) -> int:
    from host.hold import refusal
    held = refusal(host)  # as a deploy would be: a job changes data
    if held:
        raise Failure(held)
    name = check_name(host.settings.job, "JOB") if host.settings.job else ""
    release = host.need_current()
    spec = read_spec(host, release)
    job = spec.job(name) if name else None
    if job is None:
        known = " ".join(j.name for j in spec.jobs) or "none"
        raise Failure(f"give JOB=NAME, a [schedule:NAME] of release {release} (its jobs: {known})", 2)
    need_systemd(host, "jobs")
    from host.runner import job_lock
    if job_lock(host, name) is None:  # held until we exit
        raise Failure(f"job {name} is running now, started by its timer: make logs PROCESS={name} shows it; "
                      "run it again when it is done")
    directory = str(host.releases / release)
    env = {**os.environ, f"{VARS}_JOB": name, "PATH": f"{directory}/venv/bin:{os.environ.get('PATH', '')}"}
    from host.serve import units
    argv = sandbox.command(host.service, units(host), ["/bin/sh", "-c", job.command], directory, env, VARS)
    host.say(f"running job {name} of {release}: {job.command}")
    status = subprocess.run(argv, cwd=directory, env=env, check=False).returncode
    host.say(f"job {name}: exit {status}", err=status != 0)
    return status


@command("exec_worker", "a worker unit's ExecStart: NAME INDEX from the release current names",
         arg("name"), arg("index"))
def cmd_exec_worker(host: Host, args) -> int:
    from host.runner import exec_worker
    return exec_worker(host, check_name(args.name, "PROCESS"), args.index)


@command("exec_job", "a job unit's ExecStart: NAME from the release current names", arg("name"))
def cmd_exec_job(host: Host, args) -> int:
    from host.runner import exec_job
    return exec_job(host, check_name(args.name, "JOB"))


def log_files(host: Host, name: str) -> list[str]:
    """make logs PROCESS=NAME: the log of job NAME, or those of worker NAME's instances
    (NAME@2: that one), as names in shared/log/."""
    check_name(name, "PROCESS")
    try:
        present = sorted(os.listdir(host.log_dir))
    except OSError:
        present = []
    if "@" in name:
        wanted = [f"worker-{name}.log"]
    else:
        wanted = [n for n in present if n.startswith(f"worker-{name}@") and n.endswith(".log")] or [f"job-{name}.log"]
    found = [n for n in wanted if n in present]
    if not found:
        raise Failure(f"no log of a worker or job {name} in {host.log_dir} yet")
    return found
