"""Background workers ([process:NAME]) and scheduled jobs ([schedule:NAME]) as systemd units
of the app, on real Debian servers booted for the tests (tests/harness/systemd.py), as the
ordinary user `deploy` (user units, lingering on) and as root (system units under the app's
own account). test_systemd.py's Served drives make and looks at each server.

The test app (a bake without a database: no migration at each deploy) has a worker that
writes its release and pid to shared/beat.txt every half second, a job every 10 s that
appends its release to shared/tick.txt, and a slow job (6 s, never due by itself) that
writes a line as it starts and another as it ends. Tests run in file order.
"""
from __future__ import annotations

import functools
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import bake, missing
from harness.app import make, output, wait_for
from harness.systemd import USER, SystemdServer, rootfs, unavailable
from harness.venvs import make_venv
from test_systemd import PORT, Served

TIMINGS: list[str] = []
# Addresses 10.231.<index>.2: apart from test_systemd's (1, 2), test_root_state's (3) and test_https's (20).
INDEXES = {"wk1": 11, "wk2": 12, "wk3": 13}
WORKER = ('while :; do echo "$(basename "$PWD") $$" >%(shared)s/beat.tmp && mv %(shared)s/beat.tmp '
          '%(shared)s/beat.txt; sleep 0.5; done')
SECTIONS = f"""
[process:beat]
command = {WORKER}

[schedule:tick]
when = *:*:0/10
command = echo "$(basename "$PWD")" >>%(shared)s/tick.txt

[schedule:slow]
when = 2099-01-01
command = echo "start $(basename "$PWD")" >>%(shared)s/slow.txt; sleep 6; echo "done $(basename "$PWD")" >>%(shared)s/slow.txt
timeout = 1m
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    baked = bake(tmp_path_factory.mktemp("workers-bake"), database="none")
    import subprocess
    subprocess.run(["git", "init", "-q"], cwd=baked, check=True)
    make_venv(baked, tmp_path_factory)
    prod = baked / "config/prod.ini"
    prod.write_text(prod.read_text() + SECTIONS)
    return baked


def configure(project: Path, extra: str = "", sections: str = SECTIONS) -> None:
    """config/prod.ini as baked, then SECTIONS and EXTRA."""
    prod = project / "config/prod.ini"
    base = prod.read_text().split("\n[process:beat]")[0].rstrip("\n") + "\n"
    prod.write_text(base + sections + extra)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    reason = unavailable()
    if reason:
        missing(f"systemd servers: {reason}")
    rootfs("bookworm")
    base = tmp_path_factory.mktemp("worker-servers")
    booted: dict[str, SystemdServer] = {}
    try:
        for name, index in INDEXES.items():
            booted[name] = SystemdServer(base, name, index, "bookworm").start()
        yield booted
    finally:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda s: s.stop(), booted.values()))
        print("\n" + "\n".join(TIMINGS))


class App(Served):
    """Served, with the worker's and the jobs' traces."""

    @functools.cached_property
    def unit(self) -> str:
        (unit,) = re.findall(r"^service: (\S+\.service) ", self.make("status", check=False).stdout, re.M)
        return unit

    def beat(self) -> tuple[str, int] | None:
        try:
            release, pid = (self.dir / "shared/beat.txt").read_text().split()
        except (OSError, ValueError):
            return None
        return release, int(pid)

    def lines(self, name: str) -> list[str]:
        try:
            return (self.dir / f"shared/{name}").read_text().splitlines()
        except OSError:
            return []

    def alive(self, pid: int) -> bool:
        return self.ssh(f"test -d /proc/{pid}", check=False).returncode == 0

    def worker_unit(self, name: str = "beat", index: int = 1) -> str:
        return self.unit.replace(".service", f"-{name}@{index}.service")

    def job_unit(self, name: str, kind: str = "service") -> str:
        return self.unit.replace(".service", f"-job-{name}.{kind}")

    def host_seconds(self, result) -> float:
        (seconds,) = re.findall(r"^  host: (\d+\.\d+)s$", result.stdout, re.M)
        return float(seconds)


def fresh_beat(app: App, seconds: float, release: str | None = None, not_pid: int | None = None) -> tuple[str, int]:
    """Wait for a heartbeat (from RELEASE, by a pid other than NOT_PID)."""
    def seen():
        beat = app.beat()
        if beat and (release is None or beat[0] == release) and (not_pid is None or beat[1] != not_pid):
            return beat
        return None
    return wait_for(seen, seconds, f"a heartbeat from {release or 'the worker'}", interval=0.05)


@pytest.fixture(scope="module")
def as_user(servers, project) -> App:
    app = App(project, servers["wk1"], USER, "apps/my-flask-app")
    result = app.make("deploy")
    assert "not a systemd service" not in result.stdout, result.stdout
    TIMINGS.append(f"first deploy with a worker and two jobs, host step: {app.host_seconds(result):.3f}s")
    return app


# --- an ordinary user: user units ------------------------------------------------------------------


def test_the_worker_runs_from_the_deployed_release_as_a_user_unit(as_user):
    app = as_user
    release, pid = fresh_beat(app, 10, app.current())
    assert app.alive(pid)
    units = app.server.root / f"home/{USER}/.config/systemd/user"
    assert (units / app.unit.replace(".service", "-beat@.service")).is_file()
    assert (units / f"default.target.wants/{app.worker_unit()}").is_symlink()
    shown = app.show(app.worker_unit(), "ActiveState", "SubState")
    assert shown == {"ActiveState": "active", "SubState": "running"}, shown
    ps = app.make("ps").stdout
    assert re.search(rf"^web\s+\d+\s+{release}\s+running\s", ps, re.M), ps
    assert re.search(rf"^beat@1\s+\d+\s+{release}\s+active/running\s", ps, re.M), ps
    assert re.search(r"^worker beat@1: active/running, pid \d+, release " + release, app.make("status").stdout, re.M)
    planned = app.make("plan").stdout
    assert "steps: upload, lock, install, smoke_boot, smoke_paths, switch, handover, workers, prune" in planned, planned


def test_kill_9_of_the_worker_brings_it_back_within_10s(as_user):
    app = as_user
    release, pid = fresh_beat(app, 10, app.current())
    started = time.monotonic()
    app.ssh(f"kill -9 {pid}")
    _, new = fresh_beat(app, 10, release, not_pid=pid)
    took = time.monotonic() - started
    TIMINGS.append(f"user unit: kill -9 of the worker to its new heartbeat: {took:.2f}s")
    assert took < 10 and new != pid


def test_the_job_runs_by_itself_from_the_current_release_and_run_job_runs_it_at_once(as_user):
    app = as_user
    release = app.current()
    wait_for(lambda: release in app.lines("tick.txt"), 15, "the 10 s job to run by itself")
    shown = app.show(app.job_unit("tick", "timer"), "ActiveState", "AccuracyUSec")
    assert shown == {"ActiveState": "active", "AccuracyUSec": "1s"}, shown
    jobs = app.make("jobs").stdout
    assert re.search(r"^tick\s+\*:\*:0/10\s+.+\s+success \(exit 0\)\s+\S", jobs, re.M), jobs
    assert re.search(r"^slow\s+2099-01-01\s", jobs, re.M), jobs
    before = len(app.lines("slow.txt"))
    started = time.monotonic()
    ran = app.make("run-job", JOB="slow")
    assert time.monotonic() - started < 20
    assert app.lines("slow.txt")[before:] == [f"start {release}", f"done {release}"], ran.stdout
    assert "job slow: exit 0" in ran.stdout
    refused = app.make("run-job", JOB="nosuch", check=False)
    assert refused.returncode != 0 and "its jobs: slow tick" in output(refused), output(refused)
    # a run its timer started is never overlapped: run-job says so and runs nothing
    app.systemctl(f"start --no-block {app.job_unit('slow')}")
    wait_for(lambda: app.lines("slow.txt")[-1:] == [f"start {release}"], 10, "the slow job's own run to start")
    busy = app.make("run-job", JOB="slow", check=False)
    assert busy.returncode != 0 and "job slow is running now, started by its timer" in output(busy), output(busy)
    wait_for(lambda: app.lines("slow.txt")[-1:] == [f"done {release}"], 15, "the slow job's own run to end")
    assert app.lines("slow.txt")[before:] == [f"start {release}", f"done {release}"] * 2


def test_a_redeploy_moves_the_worker_and_lets_a_running_job_finish(as_user):
    app = as_user
    old_release, old_pid = fresh_beat(app, 10, app.current())
    app.make("pack")
    (tarball,) = sorted((app.project / "build").glob("my-flask-app-*.tar.gz"), key=lambda p: p.stat().st_mtime)[-1:]
    app.systemctl(f"start --no-block {app.job_unit('slow')}")
    wait_for(lambda: f"start {old_release}" in app.lines("slow.txt")[-1:], 10, "the slow job to start")
    app.make("host-deploy", RELEASE=str(tarball))
    new_release = app.current()
    assert new_release != old_release
    # the job went on from the release it started in, and finished (perhaps while the deploy
    # still ran: its 6 s are shorter than a deploy under load), never killed nor restarted
    wait_for(lambda: app.lines("slow.txt")[-1:] == [f"done {old_release}"], 15, "the slow job to finish")
    assert app.lines("slow.txt")[-2:] == [f"start {old_release}", f"done {old_release}"]
    assert app.show(app.job_unit("slow"), "Result")["Result"] == "success"
    _, new_pid = fresh_beat(app, 10, new_release)
    assert new_pid != old_pid and not app.alive(old_pid)


def test_after_a_reboot_the_worker_and_the_job_run_again(as_user):
    app = as_user
    release, pid = fresh_beat(app, 10, app.current())
    ticks = len(app.lines("tick.txt"))
    started = time.monotonic()
    to_ssh = app.server.reboot()
    fresh_beat(app, 10 + to_ssh, release, not_pid=pid)
    TIMINGS.append(f"reboot to the worker's heartbeat: {time.monotonic() - started:.1f}s (ssh after {to_ssh:.1f}s)")
    wait_for(lambda: len(app.lines("tick.txt")) > ticks, 15, "the job to run after the reboot")


def test_make_stop_stops_the_worker_and_the_jobs_and_make_start_starts_them(as_user):
    app = as_user
    release, pid = fresh_beat(app, 10)
    stopped = app.make("stop").stdout
    assert "stopped 1 worker(s) and 2 job timer(s)" in stopped, stopped
    assert not app.alive(pid)
    assert app.systemctl(f"is-active {app.worker_unit()}") == "inactive"
    assert app.systemctl(f"is-active {app.job_unit('tick', 'timer')}") == "inactive"
    assert app.systemctl(f"is-enabled {app.worker_unit()}") == "disabled"
    assert re.search(r"^beat@\*\s+-\s+-\s+stopped", app.make("ps", check=False).stdout, re.M)
    started = app.make("start").stdout
    assert "started 1 worker(s), 2 job timer(s)" in started, started
    fresh_beat(app, 10, release, not_pid=pid)
    assert app.systemctl(f"is-active {app.job_unit('tick', 'timer')}") == "active"


def test_a_failing_worker_fails_the_deploy_with_3_and_shows_in_status_without_a_rollback(as_user):
    app = as_user
    configure(app.project, "\n[process:broken]\ncommand = echo broken on purpose; exit 1\n")
    try:
        result = app.make("deploy", check=False)
        # the deploy program exits 3 (make itself exits 2 whatever its recipe's status was)
        assert result.returncode != 0 and "deploy] Error 3" in result.stderr, output(result)
        assert "worker broken@1 did not stay up" in result.stderr, output(result)
        assert app.release() == app.current()  # the new web release serves
        status = app.make("status", check=False)
        assert status.returncode != 0 and re.search(r"^worker broken@1: FAILED", status.stdout, re.M), status.stdout
        assert re.search(r"^broken@1\s.*FAILED", app.make("ps", check=False).stdout, re.M)
        assert "broken on purpose" in app.make("logs", PROCESS="broken").stdout
    finally:
        configure(app.project)
    again = app.make("deploy")
    assert "removed the units of what the config no longer names" in again.stdout, again.stdout
    assert not (app.server.root / f"home/{USER}/.config/systemd/user"
                / app.unit.replace(".service", "-broken@.service")).exists()
    assert app.make("status").returncode == 0
    TIMINGS.append(f"redeploy, host step, with one worker (and two jobs): {app.host_seconds(again):.3f}s")


def test_a_bad_when_is_refused_before_anything_changes(as_user):
    app = as_user
    release, pid = fresh_beat(app, 10, app.current())
    configure(app.project, sections=SECTIONS.replace("when = *:*:0/10", "when = every full moon"))
    try:
        result = app.make("deploy", check=False)
    finally:
        configure(app.project)
    assert result.returncode != 0
    assert "[schedule:tick] when = every full moon is not a calendar expression systemd takes" in result.stderr, \
        output(result)
    assert app.current() == release and app.release() == release
    assert fresh_beat(app, 5, release)[1] == pid  # the worker untouched


def test_a_redeploy_without_workers_removes_them_and_costs_less(as_user):
    app = as_user
    _, pid = fresh_beat(app, 10)
    configure(app.project, sections="")
    try:
        result = app.make("deploy")
    finally:
        configure(app.project)
    TIMINGS.append(f"redeploy, host step, with no worker or job: {app.host_seconds(result):.3f}s")
    assert not app.alive(pid)
    assert "beat@" not in app.make("ps").stdout


# --- root: system units under the app's own account -------------------------------------------------


@pytest.fixture(scope="module")
def as_root(servers, project) -> App:
    app = App(project, servers["wk1"], "root", "/srv/my-flask-app")
    configure(project)
    app.make("deploy", PORT=str(PORT + 1))
    return app


def test_as_root_the_worker_runs_as_the_apps_account_comes_back_and_follows_a_redeploy(as_root):
    app, port = as_root, str(PORT + 1)
    release, pid = fresh_beat(app, 10, app.current())
    uid = app.ssh(f"stat -c %u /proc/{pid}").stdout.strip()
    assert uid != "0" and uid == app.ssh("id -u my-flask-app").stdout.strip()
    assert (app.server.root / "etc/systemd/system" / app.unit.replace(".service", "-beat@.service")).is_file()
    status = app.ssh(f"grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/{pid}/status").stdout
    assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status and "Seccomp:\t2" in status, status
    started = time.monotonic()
    app.ssh(f"kill -9 {pid}")
    _, pid = fresh_beat(app, 10, release, not_pid=pid)
    TIMINGS.append(f"system unit: kill -9 of the worker to its new heartbeat: {time.monotonic() - started:.2f}s")
    wait_for(lambda: release in app.lines("tick.txt"), 15, "the job to run by itself (system unit)")
    ran = app.make("run-job", JOB="tick", PORT=port)
    assert "job tick: exit 0" in ran.stdout
    app.make("deploy", PORT=port)
    new_release, new_pid = fresh_beat(app, 10, app.current())
    assert new_release != release and not app.alive(pid)
    app.make("stop", PORT=port)
    assert not app.alive(new_pid)
    assert app.systemctl(f"is-active {app.job_unit('tick', 'timer')}") == "inactive"
    app.make("start", PORT=port)
    _, started_pid = fresh_beat(app, 10, new_release, not_pid=new_pid)
    to_ssh = app.server.reboot()
    # shared/beat.txt outlives the reboot: the heartbeat wanted is one by another pid
    _, booted_pid = fresh_beat(app, 10 + to_ssh, new_release, not_pid=started_pid)
    assert app.ssh(f"stat -c %u /proc/{booted_pid}").stdout.strip() == uid
    restarts = app.show(app.worker_unit(), "NRestarts")["NRestarts"]
    TIMINGS.append(f"root: the worker's restarts since the reboot: {restarts}")
    app.make("stop", PORT=port)


# --- two hosts: the jobs run on one ------------------------------------------------------------------


def test_on_two_hosts_the_job_runs_on_the_jobs_host_only(servers, project, tmp_path):
    one, two = servers["wk2"], servers["wk3"]
    config = tmp_path / "ssh_config"
    config.write_text(one.ssh_config.read_text() + two.ssh_config.read_text())
    configure(project)
    apps = [App(project, server, USER, "apps/my-flask-app") for server in (one, two)]
    result = make(project, "deploy", REMOTE_HOSTS=f"{one.alias} {two.alias}", REMOTE_USER=USER,
                  SSH_OPTS=f"-F {config}", REMOTE_DIR="apps/my-flask-app", PORT=str(PORT))
    assert "deployed to all 2 hosts" in result.stdout, result.stdout
    for app in apps:
        fresh_beat(app, 10, app.current())  # workers run on both
    first, second = apps
    wait_for(lambda: len(first.lines("tick.txt")) >= 2, 25, "the job to run twice on the jobs host")
    assert second.lines("tick.txt") == []
    assert not (second.server.root / f"home/{USER}/.config/systemd/user" / first.job_unit("tick", "timer")).exists()
    jobs = make(project, "jobs", REMOTE_HOSTS=f"{one.alias} {two.alias}", REMOTE_USER=USER,
                SSH_OPTS=f"-F {config}", REMOTE_DIR="apps/my-flask-app", PORT=str(PORT)).stdout
    assert f"jobs run on the jobs host ([deploy] jobs_host), not on {two.alias}" in jobs, jobs
