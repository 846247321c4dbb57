"""Zero-downtime hand-overs, refused releases and interrupted deploys, for real.

A real OpenSSH server on loopback (the `sshd_host` fixture), the baked project's own
`make deploy/restart/rollback`, real gunicorn masters, and a bounded load generator
(harness/load.py) on 127.0.0.1 counting every failed request while they work.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import missing
from harness.app import App, alive, argv, children, make, new_app, pids, ppid, wait_for
from harness.load import Load


@pytest.fixture(scope="module", autouse=True)  # autouse: before the module's deployed app
def _linux_proc() -> None:
    if not Path("/proc/self/cmdline").exists():
        missing("these tests read processes from /proc: run them on Linux")


# Steady, not saturating: 8 threads with a short pause leave CPU for the deploy itself
# on a small machine while still opening a new connection every few milliseconds.
LOAD = {"threads": 8, "pause": 0.02, "max_seconds": 240}
MIN_OK = 100  # a "healthy number" of answered requests during one operation
GUNICORN_PIN = "gunicorn==27.0.1"


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _assert_quiet(load: Load, what: str) -> None:
    assert load.failed == 0, f"{what}: {load.summary()}"
    assert load.ok >= MIN_OK, f"{what}: too little traffic got through: {load.summary()}"


@pytest.fixture(scope="module")
def app(baked_project: Path, sshd_host, tmp_path_factory, request) -> App:
    deployed = new_app(baked_project, sshd_host, tmp_path_factory, request)
    deployed.make("deploy")
    return deployed


# --- hand-overs under load ------------------------------------------------------------

def test_redeploy_restart_rollback_drop_no_request(app: App) -> None:
    first = app.current()
    assert app.healthz()["release"] == first

    with Load(app.port, **LOAD) as load:
        load.wait_for(ok=20)
        app.make("deploy")
        time.sleep(0.5)
    second = app.current()
    assert second != first
    _assert_quiet(load, "redeploy")
    assert load.releases_seen == {first, second}, load.summary()
    assert app.healthz()["release"] == second

    with Load(app.port, **LOAD) as load:
        load.wait_for(ok=20)
        master = int(app.pidfile.read_text())
        app.make("restart")
        time.sleep(0.5)
    _assert_quiet(load, "restart")
    assert app.current() == second and app.healthz()["release"] == second
    assert int(app.pidfile.read_text()) != master, "restart did not hand over to a new master"
    assert load.releases_seen == {second}, load.summary()

    with Load(app.port, **LOAD) as load:
        load.wait_for(ok=20)
        out = app.make("rollback").stdout
        time.sleep(0.5)
    _assert_quiet(load, "rollback")
    assert f"rolled back: serving {first}" in out
    assert app.current() == first and app.healthz()["release"] == first
    assert load.releases_seen == {first, second}, load.summary()


# --- a release that cannot boot on the host -------------------------------------------

FAILS_ON_HOST = '''
from . import release_id

if release_id() != "dev":
    raise RuntimeError("only fails on the host")
'''


def _deploy_broken_under_load(app: App, broken_code: str) -> tuple[str, Load, float]:
    """`make deploy` of the project with BROKEN_CODE appended to wsgi.py, under load.

    The project's own `make test` must still pass: only the host can tell. Returns the
    deploy's output (it must fail), the load and how long the deploy took.
    """
    wsgi = next(app.project.glob("src/*/wsgi.py"))
    original = wsgi.read_text()
    try:
        wsgi.write_text(original + broken_code)
        make(app.project, "test")
        with Load(app.port, **LOAD) as load:
            load.wait_for(ok=20)
            started = time.monotonic()
            result = app.make("deploy", check=False)
            took = time.monotonic() - started
            time.sleep(0.5)
    finally:
        wsgi.write_text(original)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    return out, load, took


def test_refused_release_keeps_the_old_one_serving(app: App) -> None:
    before = app.current()
    out, load, _ = _deploy_broken_under_load(app, FAILS_ON_HOST)
    assert "failed its smoke boot" in out, out
    assert "RuntimeError: only fails on the host" in out, "the boot log's tail is not shown:\n" + out
    assert app.current() == before
    assert app.healthz()["release"] == before
    _assert_quiet(load, "refused deploy")
    assert load.releases_seen == {before}, load.summary()
    assert not app.lock.exists(), "the deploy lock was not released"
    refused = [line for line in app.make("releases").stdout.splitlines() if "refused" in line]
    assert len(refused) == 1, "the refused release is not shown as refused"
    refused_id = refused[0].split()[0]
    app.make("deploy")  # the next good deploy goes through, and clears the refused one away
    good = app.current()
    assert good != before and app.healthz()["release"] == good
    assert "refused" not in app.make("releases").stdout
    app.make("rollback")  # back to an older release that served, never to the refused one
    assert app.healthz()["release"] not in (good, refused_id)


# Passes the smoke boot (which runs gunicorn in the foreground, *_FOREGROUND=1) but not the
# real, daemonized master: the case only a check after the switch can catch.
FAILS_AFTER_SWITCH = '''
import os

from . import release_id

if release_id() != "dev" and not any(k.endswith("_FOREGROUND") for k in os.environ):
    raise RuntimeError("fails only in the real master")
'''


def test_release_failing_after_the_switch_is_switched_back(app: App) -> None:
    before = app.current()
    out, load, took = _deploy_broken_under_load(app, FAILS_AFTER_SWITCH)
    assert "smoke_boot:" in out, "the release should have passed its smoke boot:\n" + out
    assert "did not become healthy" in out and f"switching current back to {before}" in out, out
    assert "RuntimeError: fails only in the real master" in out, "the log's tail is not shown:\n" + out
    # The host's part (the local tests and pack before it take what the machine's load lets them).
    host = float(re.search(r"^\s*host: (\d+\.\d+)s$", out, re.M)[1])
    assert host < 60, f"the failed new master was waited on for {host:.0f}s (the whole deploy: {took:.0f}s)"
    assert app.current() == before and app.healthz()["release"] == before
    _assert_quiet(load, "release failing after the switch")
    assert load.releases_seen == {before}, load.summary()
    assert not app.lock.exists(), "the deploy lock was not released"
    app.make("deploy")
    assert app.current() != before and app.healthz()["release"] == app.current()


HEALTHZ_FAILS_ON_THE_PORT = '''
import os

from flask import abort, request

from . import release_id

if release_id() != "dev" and not any(k.endswith("_FOREGROUND") for k in os.environ):
    @app.before_request
    def _healthz_fails_on_the_port():
        if request.path == "/healthz":
            abort(503)
'''


def test_a_new_master_whose_workers_serve_but_fail_healthz_gives_the_old_one_its_workers_back(app: App) -> None:
    """Forced past the point where the old master's workers stopped (WINCH): the new
    master's workers all serve, but its /healthz fails on the real port. The deploy gives up
    within seconds, not the boot timeout, the old master takes its workers back before the
    new one goes, and no request fails (the load asks for /, which both releases answer)."""
    before, master = app.current(), app.pid()
    wsgi = next(app.project.glob("src/*/wsgi.py"))
    original = wsgi.read_text()
    try:
        wsgi.write_text(original + HEALTHZ_FAILS_ON_THE_PORT)
        make(app.project, "test")
        with Load(app.port, path="/", **LOAD) as load:
            load.wait_for(ok=20)
            result = app.make("deploy", check=False)
            time.sleep(0.5)
    finally:
        wsgi.write_text(original)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert re.search(rf"giving the old master \(pid {master}\) its \d+ worker\(s\) back", out), out
    assert "did not become healthy" in out and f"switching current back to {before}" in out, out
    host = float(re.search(r"^\s*host: (\d+\.\d+)s$", out, re.M)[1])
    assert host < 30, f"the failing new master was waited on for {host:.0f}s"
    _assert_quiet(load, "a new master failing /healthz after the old workers stopped")
    assert app.pid() == master and app.healthz()["release"] == before
    assert children(master), "the old master has no workers"
    app.make("deploy")
    assert app.healthz()["release"] == app.current() != before


def test_first_deploy_that_cannot_serve_leaves_nothing_running(baked_project, sshd_host, tmp_path_factory,
                                                               request) -> None:
    """Nothing served before: the failure is named, no master lingers, no `current` points at it."""
    first = new_app(baked_project, sshd_host, tmp_path_factory, request)
    remote_dir = first.dir
    wsgi = next(baked_project.glob("src/*/wsgi.py"))
    original = wsgi.read_text()
    try:
        wsgi.write_text(original + FAILS_AFTER_SWITCH)
        started = time.monotonic()
        result = first.make("deploy", check=False)
        took = time.monotonic() - started
    finally:
        wsgi.write_text(original)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "did not answer /healthz" in out and "RuntimeError: fails only in the real master" in out, out
    assert took < 60, f"the dead master was waited on for {took:.0f}s"
    assert not (remote_dir / "current").exists(), "current points at a release that cannot serve"
    assert not first.lock.exists()
    assert not first.processes(), "a gunicorn lingers"
    assert "refused" in first.make("releases").stdout
    first.make("deploy")  # the fixed release goes through
    assert first.healthz()["release"] == first.current()


# --- the gunicorn behaviour the hand-over relies on ----------------------------------

def test_gunicorn_pin_master_reexecs_into_the_new_release(app: App) -> None:
    old_master = int(app.pidfile.read_text())
    app.make("deploy")
    release = os.path.realpath(app.dir / "current")
    master = int(app.pidfile.read_text())
    assert master != old_master
    args = argv(master)
    assert args[:2] == [f"{release}/venv/bin/python", f"{release}/venv/bin/gunicorn"], (
        f"the master (pid {master}) does not run the new release {release}: {args}\n"
        "gunicorn's USR2 re-exec changed: check pre_exec in deploy/gunicorn.conf.py")
    assert os.readlink(f"/proc/{master}/cwd") == release
    log = (app.dir / "shared" / "log" / "gunicorn.log").read_text()
    assert f"[{master}] [INFO] re-exec into {release}" in log, "pre_exec did not run in the new master"
    assert app.healthz()["release"] == os.path.basename(release)

    # Static pins: the hooks pre_exec relies on are internals of gunicorn's Arbiter.
    probe = ("import importlib.metadata as m, inspect, gunicorn.arbiter as a; "
             "print(m.version('gunicorn')); print(inspect.getsource(a.Arbiter.reexec))")
    result = subprocess.run([f"{release}/venv/bin/python", "-c", probe], capture_output=True,
                            text=True, check=True)
    version, source = result.stdout.split("\n", 1)
    assert f"gunicorn=={version}" == GUNICORN_PIN
    assert "self.cfg.pre_exec(self)" in source, source
    for use in ("self.START_CTX[0]", "self.START_CTX['args']", "self.START_CTX['cwd']"):
        assert use in source, f"Arbiter.reexec no longer uses {use}:\n{source}"
    assert source.index("self.cfg.pre_exec(self)") < source.index("os.execvpe("), source
    requirements = (app.project / "requirements.txt").read_text().split()
    assert GUNICORN_PIN in requirements, "requirements.txt must pin " + GUNICORN_PIN


# --- interrupted deploys -------------------------------------------------------------

def _wait_for_text(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    wait_for(lambda: text in log.read_text(errors="replace") or proc.poll() is not None,
             timeout, f"{text!r} in {log}", interval=0.02)
    assert text in log.read_text(errors="replace"), log.read_text(errors="replace")


def _wait_for_unfinished(app: App, proc: subprocess.Popen[bytes], log: Path) -> None:
    def appeared() -> bool:
        return proc.poll() is not None or any((app.dir / "releases").glob("*/.unfinished"))
    wait_for(appeared, 180, "a release being installed (releases/*/.unfinished)", interval=0.005)
    assert proc.poll() is None, "make deploy ended before the install:\n" + log.read_text()


def _host_script(app: App) -> int:
    """The pid of the host-side deploy: `sh <REMOTE_DIR>/remote.sh deploy …`, which execs
    `python3 -S <REMOTE_DIR>/remote.sh deploy …` (not its children)."""
    script = f"{app.dir}/remote.sh"
    found = [pid for pid in pids() if argv(pid)[-4:-2] == [script, "deploy"]]
    top = [pid for pid in found if ppid(pid) not in found]
    assert len(top) == 1, f"expected one host-side remote.sh deploy, found {top}"
    return top[0]


def _next_deploy_succeeds(app: App) -> str:
    before = app.current()
    result = app.make("deploy")
    assert app.current() != before
    assert app.healthz()["release"] == app.current()
    assert not app.lock.exists()
    return result.stdout


def test_sigint_during_local_tests_changes_nothing(app: App, tmp_path: Path) -> None:
    before, releases = app.current(), app.releases()
    log = tmp_path / "deploy.log"
    # A tree not tested yet, whose tests take a minute: the SIGINT lands while they run, however
    # loaded the machine (once it came after a whole deploy had finished).
    changed = app.project / "tests" / "test_sigint_marker.py"
    changed.write_text("import time\n\n\ndef test_slow():\n    time.sleep(60)\n")
    with Load(app.port, **LOAD) as load:
        started = time.monotonic()
        proc = app.popen_make("deploy", log=log)
        try:
            _wait_for_text(log, "test: ok", proc)  # make test checked the configs (dev, prod, test): pytest starts now
            time.sleep(0.3)
            os.killpg(proc.pid, signal.SIGINT)
            sent = time.monotonic() - started
            assert proc.wait(60) != 0, f"SIGINT sent {sent:.1f}s after the start:\n" + log.read_text()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            changed.unlink()  # (left, it would slow every later deploy of this module by a minute)
        assert not re.search(r"^\s*host: \d+\.\d{3}s$", log.read_text(), re.M), "the host step ran"
        assert app.current() == before and app.releases() == releases
        assert not app.lock.exists()
        assert app.healthz()["release"] == before
    _assert_quiet(load, "interrupted local step")
    _next_deploy_succeeds(app)


def test_client_killed_mid_install_host_finishes_alone(app: App, tmp_path: Path) -> None:
    before = app.current()
    log = tmp_path / "deploy.log"
    with Load(app.port, **LOAD) as load:
        proc = app.popen_make("deploy", log=log)
        try:
            _wait_for_unfinished(app, proc, log)
            os.killpg(proc.pid, signal.SIGTERM)  # make and its ssh: the host loses its client
            proc.wait(30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        # The host script ignores HUP and PIPE: it finishes the deploy (or cleans up) alone.
        wait_for(lambda: app.lock_released(), 180, "the host script to release the lock", 0.1)
        served = app.healthz()["release"]
        time.sleep(0.5)
    _assert_quiet(load, "deploy whose client was killed")
    print(f"client killed mid-install: the host {'finished the deploy' if served != before else 'cleaned up'}")
    assert served == app.current()
    assert served in (before, *app.releases())
    assert not any((app.dir / "releases").glob("*/.unfinished")) or served == before
    _next_deploy_succeeds(app)


def _gunicorns(app: App) -> dict[int, list[str]]:
    """Every gunicorn process running from this app's releases: pid -> argv."""
    prefix = f"{app.dir}/releases/"
    return {pid: args for pid in pids()
            if (args := argv(pid)) and any(a.startswith(prefix) and "gunicorn" in a for a in args)}


def test_a_deploy_stops_the_new_master_of_an_unfinished_hand_over(app: App) -> None:
    """Forced, not left to a kill's timing: a hand-over cut off between USR2 and TERM leaves
    the old master serving beside its child, the new master, and the old one then ignores
    any later USR2 ("Child exists"). The next deploy stops that child and hands over."""
    app.make("start")
    master, child_file = app.pid(), app.pidfile.with_name("gunicorn.pid.2")
    # The last test's hand-over may still have its old master draining: until that one is
    # gone (gunicorn then renames gunicorn.pid.2), the master ignores USR2 ("Parent master exists").
    wait_for(lambda: not child_file.exists(), 60, "the previous hand-over's old master to exit")
    os.kill(master, signal.SIGUSR2)  # what a hand-over sends first
    wait_for(lambda: alive(_read_pid(child_file)) and ppid(_read_pid(child_file)) == master, 60,
             "the USR2 master beside the old one")
    child = _read_pid(child_file)
    with Load(app.port, **LOAD) as load:
        load.wait_for(ok=20)
        out = _next_deploy_succeeds(app)
        time.sleep(0.5)
    _assert_quiet(load, "a deploy after an unfinished hand-over")
    assert f"stopping pid {child}, the new master of an unfinished hand-over" in out, out
    wait_for(lambda: not alive(child) and not alive(master), 45, "the unfinished hand-over's two masters to exit")
    assert app.healthz()["release"] == app.current()


@pytest.mark.parametrize("window", ["install", "smoke", "handover"])
def test_host_script_killed_mid_deploy_leaves_a_stale_lock(app: App, tmp_path: Path, window: str) -> None:
    """SIGKILL the host script: mid-install (a release with .unfinished), mid-smoke-boot
    (its gunicorn wrote smoke.pid) or mid-hand-over (the USR2 master has written
    gunicorn.pid.2, the old one still runs)."""
    before = app.current()
    log = tmp_path / "deploy.log"
    marker = app.run_dir / ("gunicorn.pid.2" if window == "handover" else "smoke/smoke.pid")
    # The last test's hand-over may still be finishing (its old master drains, then the new
    # one renames .2 away): a marker left from it would be taken for this deploy's.
    wait_for(lambda: not marker.exists(), 60, f"{marker} of the previous deploy to go", 0.05)
    with Load(app.port, **LOAD) as load:
        proc = app.popen_make("deploy", log=log)
        try:
            if window == "install":
                _wait_for_unfinished(app, proc, log)
            else:
                wait_for(lambda: marker.exists() or proc.poll() is not None, 180, str(marker), 0.005)
                assert proc.poll() is None, f"make deploy ended before {marker} appeared:\n" + log.read_text()
            os.kill(_host_script(app), signal.SIGKILL)
            assert proc.wait(120) != 0, log.read_text()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        # Killed between USR2 and TERM (the usual case), two masters now serve: the old one
        # and its child, the new master, which makes the old one ignore any later USR2.
        child = _read_pid(app.pidfile.with_name("gunicorn.pid.2"))
        two_masters = window == "handover" and alive(child) and ppid(child) == _read_pid(app.pidfile)
        assert app.lock.exists(), "a SIGKILLed host script cannot release its lock"
        assert app.lock_released(), "the lock's holder should be dead"
        answer = app.healthz()["release"]
        if window != "handover":
            assert app.current() == before and answer == before
        out = _next_deploy_succeeds(app)
        time.sleep(0.5)
    _assert_quiet(load, f"deploy whose host script was killed mid-{window}, and the next one")
    assert "taking over a stale deploy lock" in out, out
    if two_masters:  # the kill's timing decides; test_a_deploy_stops_the_new_master_… forces it
        assert "the new master of an unfinished hand-over" in out, out
    print(f"host script killed mid-{window}: {'two masters were left' if two_masters else 'one master'}")
    assert not any((app.dir / "releases").glob("*/.unfinished")), "the unfinished release was not pruned"
    # The old master was sent TERM and drains its requests without the deploy waiting for it
    # (serve.py: handover): within gunicorn's graceful timeout it is gone, on a busy machine too.
    def strays() -> dict[int, list[str]]:
        return {pid: args for pid, args in _gunicorns(app).items()
                if not any(a.startswith(f"{app.dir}/releases/{app.current()}/") for a in args)}
    try:
        wait_for(lambda: not strays(), 45, "the old release's gunicorn to exit", 0.1)
    except AssertionError:
        raise AssertionError(f"gunicorn processes of other releases still run: {strays()}") from None
