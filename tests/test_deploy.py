"""`make deploy` and the host targets, for real: a baked project deploys over ssh/scp to a
private sshd on this machine and runs under gunicorn. Nothing is mocked.

Each app lives in its own REMOTE_DIR (a per-test tmp dir) on its own free PORT. Several
read-mostly checks share one deployed app (`shared_app`); every test leaves it serving.
A finalizer stops every app a test started and fails if a process of it outlives `make stop`
(harness.app: App.stop_everything).
"""
from __future__ import annotations

import calendar
import hashlib
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from harness.app import (App, alive, children, cmdline, dead_pid, healthz, make, new_app, output,
                         port_open, tree, wait_for)

RELEASE_ID = re.compile(r"\d+\.\d+\.\d+-\d{8}T\d{6}Z")


# --- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_app(baked_project, sshd_host, tmp_path_factory, request) -> App:
    """One app, deployed once; tests that use it leave it serving."""
    app = new_app(baked_project, sshd_host, tmp_path_factory, request)
    app.first_deploy = app.deploy()
    return app


@pytest.fixture()
def fresh_app(baked_project, sshd_host, tmp_path_factory, request) -> App:
    """A REMOTE_DIR nothing was deployed to yet, and a free port."""
    return new_app(baked_project, sshd_host, tmp_path_factory, request)


@pytest.fixture()
def serving(shared_app) -> App:
    """The shared app, serving (a test before may have failed half-way)."""
    shared_app.make("start")
    return shared_app


def local_ini(app: App) -> tuple[int, str]:
    path = app.dir / "shared" / "local.ini"
    return path.stat().st_mode & 0o777, path.read_text()


# --- 1. deploy, status, host-local secrets --------------------------------------------


def test_deploy_serves_a_release_and_status_reports_it(serving):
    app = serving
    answer = healthz(app.port)
    assert answer["status"] == "ok"
    release = answer["release"]
    assert RELEASE_ID.fullmatch(release), answer
    assert app.current() == release

    status = app.make("status")
    pid = app.pid()
    assert f"release: {release}" in status.stdout
    assert f"pid {pid}" in status.stdout
    assert str(app.port) in status.stdout
    assert re.search(r'healthz: \{.*"status": "ok"', status.stdout), status.stdout
    assert release in status.stdout.split("healthz:")[1]
    assert f"{app.dir}/releases/{release}/venv/bin/gunicorn" in cmdline(pid)


def test_the_first_deploy_prints_no_shell_error_for_the_host_program_it_has_not_yet_sent(serving):
    said = output(serving.first_deploy)
    assert "remote.sh: No such file" not in said and "bash:" not in said, said


def test_local_ini_is_generated_private(serving):
    mode, text = local_ini(serving)
    assert mode == 0o600
    # shared/ (data, logs, backups, secrets) is the app's alone; so is what its workers write
    assert (serving.dir / "shared").stat().st_mode & 0o777 == 0o700
    worker = children(serving.pid())[0]
    umask = re.search(r"^Umask:\s+(\d+)$", Path(f"/proc/{worker}/status").read_text(), re.M)[1]
    assert umask == "0077"
    key = re.search(r"^secret_key = (\S+)$", text, re.M)
    assert key and re.fullmatch(r"[0-9a-f]{64}", key.group(1)), text


# --- 2. redeploy, releases, rollback --------------------------------------------------


def test_redeploy_keeps_local_ini_then_rollback(serving):
    app = serving
    old, secrets = app.release(), local_ini(app)
    result = app.deploy()
    new = app.release()
    assert new != old and RELEASE_ID.fullmatch(new)
    assert f"deployed {new}" in result.stdout
    assert "  test: passed already for this tree" in result.stdout  # the first deploy tested it
    assert "local.ini" not in result.stdout
    assert local_ini(app) == secrets  # same key, still 0600
    # the hand-over re-executed into the new release's own venv
    assert f"/releases/{new}/venv/bin/gunicorn" in cmdline(app.pid())

    listing = app.make("releases").stdout.splitlines()
    assert f"* {new} (current)" in listing
    assert f"  {old}" in listing
    assert listing.index(f"  {old}") < listing.index(f"* {new} (current)")  # oldest first

    rollback = app.make("rollback")
    assert f"rolling back from {new} to {old}" in rollback.stdout
    assert app.release() == old
    assert app.current() == old
    assert f"/releases/{old}/venv/bin/gunicorn" in cmdline(app.pid())
    assert f"* {old} (current)" in app.make("releases").stdout.splitlines()
    assert app.make("status").returncode == 0
    assert local_ini(app) == secrets


def test_a_failing_test_stops_the_deploy_before_any_host_is_touched(serving):
    """A tree that passed is not tested again by a deploy; any change is."""
    app = serving
    before, releases = app.current(), app.releases()
    broken = app.project / "tests" / "test_zz_broken.py"
    broken.write_text("def test_broken():\n    assert 1 + 1 == 3\n")
    try:
        result = app.make("deploy", check=False)
    finally:
        broken.unlink()
    said = output(result)
    assert result.returncode != 0 and "make test failed; no host was touched" in said, said
    assert "test_zz_broken.py" in said and not re.search(r"^\s*host: ", said, re.M), said
    assert app.current() == before and app.releases() == releases and app.release() == before


def test_status_and_restart_find_the_app_on_its_own_port(serving):
    """Deployed with PORT=… on the command line, then asked without it (the config's port)."""
    app = serving
    release, pid = app.release(), app.pid()
    status = app.make("status", PORT=None)
    assert f"port: {app.port}" in status.stdout
    assert release in status.stdout.split("healthz:")[1]
    restart = app.make("restart", PORT=None, check=False)
    assert restart.returncode == 0, output(restart)
    assert app.release() == release
    assert app.pid() != pid  # a fresh master, on the same port


# --- 3. stop, start, logs -------------------------------------------------------------


def test_stop_start_are_idempotent_and_logs_show_gunicorn(serving):
    app = serving
    release, pid = app.release(), app.pid()

    stop = app.make("stop")
    assert f"stopped (was pid {pid})" in stop.stdout
    assert not alive(pid)
    assert not port_open(app.port)
    status = app.make("status", check=False)
    assert status.returncode != 0
    assert "not running" in output(status)

    again = app.make("stop")
    assert "not running" in again.stdout

    start = app.make("start")
    assert f"started release {release} on port {app.port}" in start.stdout
    assert app.release() == release
    new_pid = app.pid()
    assert new_pid != pid

    again = app.make("start")
    assert f"already running: release {release}, pid {new_pid}" in again.stdout
    assert app.pid() == new_pid and app.release() == release

    logs = app.make("logs", LINES="5").stdout.splitlines()
    assert 0 < len(logs) <= 5
    assert all(re.match(r"\[\d{4}-\d\d-\d\d [\d:]+ [+-]\d{4}\] \[\d+\] \[[A-Z]+\] ", line) for line in logs), logs
    everything = app.make("logs", LINES="1000").stdout
    assert re.search(rf"\[{new_pid}\] \[INFO\] Listening at: http://[\d.]+:{app.port} \({new_pid}\)", everything)
    assert f"Booting worker with pid: {children(new_pid)[0]}" in everything


# --- 4. variables are checked before anything touches the host ------------------------


@pytest.mark.parametrize("target", ["deploy", "stop"])
@pytest.mark.parametrize("overrides, words", [
    ({"REMOTE_HOST": None}, ["REMOTE_HOST is not set"]),
    ({"PORT": "abc"}, ["PORT must be a number", "abc"]),
    ({"PORT": "70000"}, ["PORT must be between 1 and 65535", "70000"]),
    ({"REMOTE_HOST": "x;touch {marker};:"}, ["REMOTE_HOST must be a host name"]),
    ({"REMOTE_HOST": "-oProxyCommand=touch {marker}"}, ["REMOTE_HOST must be a host name"]),
    ({"REMOTE_USER": "a'$(touch {marker})'"}, ["REMOTE_USER must be a user name"]),
    ({"LINES": "1;touch {marker}"}, ["LINES must be a number"]),
    ({"APP_ENV": "prod;touch {marker}"}, ["APP_ENV must be an environment name"]),
    ({"KEEP_RELEASES": "0"}, ["KEEP_RELEASES must be at least 1"]),
], ids=["no-REMOTE_HOST", "PORT=abc", "PORT=70000", "REMOTE_HOST=code", "REMOTE_HOST=option", "REMOTE_USER=code",
        "LINES=code", "APP_ENV=code", "KEEP_RELEASES=0"])
def test_bad_variables_stop_before_ssh(fresh_app, monkeypatch, tmp_path, target, overrides, words):
    """Each is named; none reaches a shell as code (the marker file is never made)."""
    monkeypatch.delenv("REMOTE_HOST", raising=False)
    marker = tmp_path / "ran"
    overrides = {k: v and v.replace("{marker}", str(marker)) for k, v in overrides.items()}
    variables = {k: v for k, v in {**fresh_app.vars, **overrides}.items() if v is not None}
    started = time.monotonic()
    result = make(fresh_app.project, target, check=False, **variables)
    assert time.monotonic() - started < 10
    assert result.returncode != 0
    for word in words:
        assert word in result.stderr
    assert "==>" not in result.stdout  # no check-config, test or pack either
    assert not fresh_app.dir.exists()  # no ssh: every target first makes REMOTE_DIR
    assert not marker.exists(), "a variable ran as code"


# --- 5. an unreachable host -----------------------------------------------------------


@pytest.mark.parametrize("how", ["refused", "silent"])
def test_unreachable_host_fails_fast_and_changes_nothing(serving, how):
    app = serving
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        if how == "silent":
            sock.listen(1)  # accepts the TCP connection, never says a word of SSH
        release = app.release()
        before = tree(app.dir)
        started = time.monotonic()
        result = app.make("deploy", check=False, REMOTE_HOST="127.0.0.1",
                          SSH_OPTS=f"{app.host.ssh_opts} -o Port={sock.getsockname()[1]}")
        elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert elapsed < 15
    assert "cannot reach 127.0.0.1" in result.stderr
    assert "==>" not in result.stdout
    assert tree(app.dir) == before
    assert app.release() == release


# --- 6. the deploy lock -----------------------------------------------------------------


def write_lock(app: App, pid: int, who: str) -> None:
    (app.dir / ".deploy.lock").mkdir()
    (app.dir / ".deploy.lock" / "info").write_text(
        f"who={who}\nwhen=2026-01-01T00:00:00Z\nversion=my-flask-app-0.0.9.tar.gz\npid={pid}\n")


def test_the_smoke_boots_socket_is_the_apps_alone(serving):
    """The new release answers on its private socket before the switch: no other account on
    the host may reach it (it was mode 0777 in a shared directory)."""
    app = serving
    sock = app.dir / "shared" / "run" / "smoke" / "smoke.sock"
    command = ["make", "--no-print-directory", "deploy", *(f"{k}={v}" for k, v in app.vars.items())]
    deploy = subprocess.Popen(command, cwd=app.project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def seen():
            try:
                return sock.is_socket() and (sock.stat().st_mode & 0o777, sock.parent.stat().st_mode & 0o777)
            except FileNotFoundError:  # gone again meanwhile
                return None
        modes = wait_for(seen, 180, "the smoke boot's socket", 0.002)
        out = deploy.communicate(timeout=300)[0]
    finally:
        if deploy.poll() is None:
            deploy.kill()
    assert deploy.returncode == 0, out
    assert modes[0] & 0o077 == 0 and modes[1] == 0o700, [oct(m) for m in modes]


def test_a_running_deploy_holds_the_lock(serving):
    app = serving
    before = app.release()
    command = ["make", "--no-print-directory", "deploy", *(f"{k}={v}" for k, v in app.vars.items())]
    first = subprocess.Popen(command, cwd=app.project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = wait_for(lambda: "pid=" in app.lock_info() and app.lock_info(), 120, "the deploy to take the lock")
        # The holder held still (SIGSTOP), so that the second command surely meets it: a
        # deploy's host side can be over before another make has started.
        holder = int(re.search(r"^pid=(\d+)$", info, re.M)[1])
        os.kill(holder, signal.SIGSTOP)
        try:
            started = time.monotonic()
            second = app.make("restart", check=False)  # takes the lock at once: no local build
            assert first.poll() is None, "the refusal came while the deploy still ran"
            assert time.monotonic() - started < 15
        finally:
            os.kill(holder, signal.SIGCONT)
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode != 0
    assert "another deploy holds the lock" in second.stderr
    assert re.search(r"who=[^@\s]+@\S+ when=\d{4}-\d\d-\d\dT[\d:]+Z version=my-flask-app-0\.1\.0-\S+\.tar\.gz",
                     second.stderr), second.stderr
    assert " ".join(info.split()) in " ".join(second.stderr.split())
    assert first.returncode == 0, out + err
    assert app.release() not in (before, "")
    assert not (app.dir / ".deploy.lock").exists()


def test_a_live_lock_refuses_a_deploy_and_make_unlock_removes_it(serving):
    app = serving
    before = app.release()
    holder = subprocess.Popen(["sh", "-c", "sleep 300; :", "remote.sh"])  # looks like a deploy (a slow host: 300)
    try:
        wait_for(lambda: "remote.sh" in cmdline(holder.pid), 10, "the holder to start")
        write_lock(app, holder.pid, "alice@laptop")
        refused = app.make("deploy", check=False)
        assert refused.returncode != 0
        assert "another deploy holds the lock" in refused.stderr
        assert "who=alice@laptop when=2026-01-01T00:00:00Z version=my-flask-app-0.0.9.tar.gz" in refused.stderr
        assert f"pid={holder.pid}" in app.lock_info()  # the refused deploy left the lock alone
        assert app.release() == before
        assert holder.poll() is None
        master = app.pid()
        for target in ("stop", "start"):  # neither crosses a deploy's switch and hand-over
            refused = app.make(target, check=False)
            assert refused.returncode != 0 and "another deploy holds the lock" in refused.stderr, target
        assert app.pid() == master and app.release() == before

        unlock = app.make("unlock")
        assert "removing deploy lock (who=alice@laptop" in unlock.stdout
        assert not (app.dir / ".deploy.lock").exists()
        assert "no deploy lock held" in app.make("unlock").stdout
        assert holder.poll() is None  # unlock removes the lock, it kills nobody
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_whose_holder_died_is_taken_over(serving):
    app = serving
    before = app.release()
    write_lock(app, dead_pid(), "bob@crashed")
    result = app.deploy()
    assert "taking over a stale deploy lock (who=bob@crashed" in result.stdout
    assert app.release() != before
    assert not (app.dir / ".deploy.lock").exists()


# --- 7. interrupted uploads and unfinished releases -----------------------------------


def finished(app: App) -> list[str]:
    """Finished releases as `make releases` lists them, oldest first."""
    return [line[2:].split()[0] for line in app.make("releases").stdout.splitlines()
            if "(unfinished" not in line and RELEASE_ID.match(line[2:])]


def interrupted_upload(app: App, name: str) -> Path:
    """Upload the release with a real scp, slowed down and killed (with its ssh) part way."""
    tarball = next((app.project / "build").glob("my-flask-app-*.tar.gz"))
    partial = app.dir / ".incoming" / name
    scp = subprocess.Popen(["scp", "-q", *shlex.split(app.host.ssh_opts), "-l", "200", str(tarball),
                            f"{app.host.host_alias}:{partial}"], start_new_session=True)
    try:
        wait_for(lambda: partial.exists() and partial.stat().st_size > 0, 30, "scp to start writing")
    finally:
        os.killpg(scp.pid, signal.SIGKILL)
        scp.wait()
    assert 0 < partial.stat().st_size < tarball.stat().st_size
    return tarball


def test_broken_uploads_and_installs_are_never_activated(serving):
    app = serving
    if finished(app).index(app.current()) == 0:  # rollback below needs an older release
        app.deploy()
    releases, current = finished(app), app.current()
    previous = releases[releases.index(current) - 1]

    # A release killed while installing, newer than the one rollback should pick.
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(
        calendar.timegm(time.strptime(current.split("-")[-1], "%Y%m%dT%H%M%SZ")) - 1))
    unfinished = app.dir / "releases" / f"0.1.0-{stamp}"
    (unfinished / "venv" / "bin").mkdir(parents=True)
    (unfinished / "RELEASE").write_text("name=my-flask-app\nversion=0.1.0\n")
    (unfinished / ".unfinished").touch()
    listing = app.make("releases").stdout
    assert f"  {unfinished.name} (unfinished" in listing
    assert f"* {current} (current)" in listing
    rollback = app.make("rollback")
    assert f"rolling back from {current} to {previous}" in rollback.stdout
    assert app.release() == previous

    # An upload cut off half-way: the host's check refuses it, nothing changes.
    name = "my-flask-app-0.1.0-interrupted.tar.gz"
    tarball = interrupted_upload(app, name)
    sha = hashlib.sha256(tarball.read_bytes()).hexdigest()
    on_disk = sorted(os.listdir(app.dir / "releases"))
    refused = app.host.run(f"APP_DIR={app.dir} PORT={app.port} DEPLOY_WHO=test "
                           f"sh {app.dir}/remote.sh deploy {name} {sha}", timeout=120)
    assert refused.returncode != 0
    assert f"upload {name} is incomplete or corrupt" in refused.stderr
    assert app.release() == previous
    assert sorted(os.listdir(app.dir / "releases")) == on_disk
    assert not (app.dir / ".deploy.lock").exists()
    assert app.make("status").returncode == 0

    # The next deploy works, activates its own release and removes the unfinished one.
    app.deploy()
    assert app.release() == app.current() not in (previous, unfinished.name)
    assert not unfinished.exists()
    assert "unfinished" not in app.make("releases").stdout


# --- 8. pidfiles that lie ---------------------------------------------------------------


def test_after_kill_9_status_fails_and_start_serves(serving):
    app = serving
    release, master = app.release(), app.pid()
    assert str(app.dir) in cmdline(master)
    workers = children(master)
    assert workers
    for pid in [master, *workers]:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in [master, *workers]), 10, "gunicorn to die")
    wait_for(lambda: not port_open(app.port), 10, "the port to close")
    assert app.pid() == master  # the pidfile is stale now

    status = app.make("status", check=False)
    assert status.returncode != 0
    assert "master: not running" in status.stdout
    start = app.make("start")
    assert f"started release {release}" in start.stdout
    assert app.release() == release
    assert app.pid() != master


def test_a_pidfile_naming_another_program_is_not_trusted(serving):
    app = serving
    release = app.release()
    app.make("stop")
    sleeper = subprocess.Popen(["sleep", "120"])
    pidfile = app.run_dir / "gunicorn.pid"
    try:
        pidfile.write_text(f"{sleeper.pid}\n")
        stop = app.make("stop")
        assert "not running" in stop.stdout
        assert sleeper.poll() is None
        status = app.make("status", check=False)
        assert status.returncode != 0
        assert sleeper.poll() is None

        pidfile.write_text(f"{sleeper.pid}\n")  # e.g. a crash, then the pid was reused
        started = time.monotonic()
        start = app.make("start", check=False)
        assert start.returncode == 0, output(start)
        assert time.monotonic() - started < 30
        assert app.release() == release
        assert app.pid() != sleeper.pid
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


# --- 9. the port is taken ---------------------------------------------------------------


def test_first_deploy_to_a_port_in_use_fails_and_leaves_its_owner_alone(fresh_app):
    app = fresh_app
    with socket.socket() as owner:
        owner.bind(("127.0.0.1", app.port))
        owner.listen(5)
        result = app.deploy(check=False)
        assert result.returncode != 0
        assert re.search(rf"port {app.port} .*already in use", result.stderr), output(result)
        owner.settimeout(5)
        with socket.create_connection(("127.0.0.1", app.port), timeout=5) as client:
            client.sendall(b"still mine")
            while True:  # the backlog also holds the host's own probe of the port
                conn, peer = owner.accept()
                with conn:
                    if peer == client.getsockname():
                        assert conn.recv(100) == b"still mine"
                        break
    assert not (app.dir / "current").exists()
    assert os.listdir(app.dir / "releases") == []
    assert not (app.dir / ".deploy.lock").exists()
    assert app.processes() == []


def test_start_when_running_is_harmless(serving):
    app = serving
    release, pid = app.release(), app.pid()
    result = app.make("start")
    assert "already running" in result.stdout
    assert (app.release(), app.pid()) == (release, pid)
    assert app.make("status").returncode == 0

