"""Day-to-day operations on a deployed app, for real over a private sshd: the release
command, `make exec`, `make shell` (under a pseudo-terminal), config-set / config-unset /
config-show (values on stdin, never on a command line), `make history` and the local
post-deploy hook. The three-host rollout's release command is in test_hosts.py.
"""
from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import threading
import time

import pytest
from harness.app import make, new_app, output
from harness.load import Load

MARKER_COMMAND = ("python -c \"import os; open(os.environ['MY_FLASK_APP_SHARED_DIR'] + '/release-command.log', 'a')"
                  ".write(os.path.basename(os.getcwd()) + ' ' + os.environ['MY_FLASK_APP_ENV'] + chr(10))\"")


@pytest.fixture(scope="module")
def app(baked_project, sshd_host, tmp_path_factory, request):
    deployed = new_app(baked_project, sshd_host, tmp_path_factory, request)
    deployed.deploy()
    return deployed


@pytest.fixture()
def prod_ini(baked_project):
    """config/prod.ini, put back afterwards."""
    path = baked_project / "config" / "prod.ini"
    saved = path.read_text()
    yield path
    path.write_text(saved)


def history(app) -> list[list[str]]:
    lines = app.make("history", LINES="100").stdout.splitlines()[1:]
    return [line.split() for line in lines]


def marker_lines(app) -> list[str]:
    path = app.dir / "shared" / "release-command.log"
    return path.read_text().splitlines() if path.exists() else []


# --- the release command ------------------------------------------------------------------


def test_a_release_command_runs_once_per_deploy_in_the_new_release(app, prod_ini):
    prod_ini.write_text(prod_ini.read_text() + f"\n[deploy]\nrelease_command = {MARKER_COMMAND}\n")
    before = marker_lines(app)
    result = app.deploy()
    new = app.current()
    assert marker_lines(app) == [*before, f"{new} prod"]  # once, in the new release, with the env
    assert re.search(r"^\s+release_command: [\d.]+s$", result.stdout, re.M), result.stdout
    out = result.stdout
    assert out.index("smoke_boot:") < out.index("release_command:") < out.index("switch:")
    assert app.release() == new

    old = app.current()
    app.make("rollback")  # no release command on a rollback
    assert marker_lines(app) == [*before, f"{new} prod"] and app.current() != old


def test_a_failing_release_command_switches_nothing(app, prod_ini):
    app.make("start")
    serving, releases = app.release(), sorted(os.listdir(app.dir / "releases"))
    prod_ini.write_text(prod_ini.read_text() + "\n[deploy]\nrelease_command = echo migrating; exit 4\n")
    result = app.deploy(check=False)
    assert result.returncode != 0
    assert "migrating" in result.stdout
    assert "the release command (echo migrating; exit 4) failed" in result.stderr, output(result)
    assert "nothing was switched, and what ran before runs unchanged" in result.stderr
    assert app.release() == app.current() == serving
    refused = [r for r in os.listdir(app.dir / "releases") if r not in releases]
    assert "(refused" in app.make("releases").stdout and refused
    last = history(app)[-1]
    assert last[2:4] == ["deploy", serving] and last[5] == "failed", last


# --- exec and shell ---------------------------------------------------------------------------


def test_exec_runs_in_the_current_release_with_the_apps_config(app):
    app.make("start")
    current = app.dir / "releases" / app.current()
    result = app.make("exec", CMD='echo "cwd=$PWD"; echo "py=$(command -v python)"; '
                                 'echo "env=$MY_FLASK_APP_ENV local=$MY_FLASK_APP_LOCAL_CONFIG"; '
                                 'my_flask_app check-config --env prod --runtime')
    out = result.stdout
    assert f"cwd={current}" in out and f"py={current}/venv/bin/python" in out, out
    assert f"env=prod local={app.dir}/shared/local.ini" in out
    assert "prod: ok" in out

    failed = app.make("exec", check=False, CMD="echo before; exit 3")
    assert failed.returncode != 0 and "before" in failed.stdout
    assert "the command exited with status 3" in failed.stderr
    assert app.make("exec", check=False).returncode != 0  # no CMD: says so
    assert "CMD is not set" in app.make("exec", check=False).stderr


def test_shell_evaluates_inside_the_app_under_a_terminal(app):
    """`make shell` over `ssh -t`, driven through a pseudo-terminal as a person would."""
    command = ["make", "--no-print-directory", "shell", *(f"{k}={v}" for k, v in app.vars.items())]
    pid, fd = pty.fork()
    if pid == 0:  # the child: make, with the pty as its terminal
        os.chdir(app.project)
        os.execvp(command[0], command)
    seen = b""

    def read_until(text: bytes, seconds: float) -> None:
        nonlocal seen
        deadline = time.monotonic() + seconds
        while text not in seen:
            assert time.monotonic() < deadline, f"no {text!r} in:\n{seen.decode(errors='replace')}"
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break

    try:
        read_until(b">>> ", 60)
        os.write(fd, b"print('release=' + app.config['RELEASE_ID'] + ' env=' + app.config['APP_ENV'])\n")
        read_until(b"env=prod", 20)
        os.write(fd, b"exit()\n")
        _, status = os.waitpid(pid, 0)
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.close(fd)
    assert f"release={app.current()} env=prod".encode() in seen
    assert os.waitstatus_to_exitcode(status) == 0


# --- host settings ----------------------------------------------------------------------------


def config_set(app, setting: str, value: str, check: bool = True):
    command = ["make", "--no-print-directory", "config-set", f"SETTING={setting}",
               *(f"{k}={v}" for k, v in app.vars.items())]
    assert not [arg for arg in command if value in arg]  # never on the command line
    result = subprocess.run(command, cwd=app.project, input=value + "\n", capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(output(result))
    return result


def test_config_set_takes_effect_without_dropping_a_request(app):
    app.make("start")
    local = app.dir / "shared" / "local.ini"
    with Load(app.port, threads=6, path="/") as load:
        load.wait_for(ok=20)
        result = config_set(app, "app.message", "Hello from config-set, 100% sure")
        load.wait_for(ok=load.ok + 20)
    assert load.failed == 0, load.failures[:5]
    assert "set [app] message" in result.stdout and "handover:" in result.stdout
    page = subprocess.run(["curl", "-s", f"http://127.0.0.1:{app.port}/"], capture_output=True, text=True).stdout
    assert "Hello from config-set, 100% sure" in page
    assert oct(local.stat().st_mode & 0o777) == "0o600"

    unset = app.make("config-unset", SETTING="app.message")
    assert "removed [app] message" in unset.stdout
    page = subprocess.run(["curl", "-s", f"http://127.0.0.1:{app.port}/"], capture_output=True, text=True).stdout
    assert "Hello from config-set" not in page


@pytest.mark.parametrize("setting, value, named", [
    ("server.workers", "many", "[server] workers: 'many' is not an integer"),
    ("server.port", "70000", "[server] port: 70000 is out of range"),
    ("app.debug", "true", "[app] debug is on for prod"),
    ("app.nope", "x", "unknown setting 'app.nope'"),
])
def test_a_bad_value_is_refused_and_nothing_changes(app, setting, value, named):
    app.make("start")
    local = app.dir / "shared" / "local.ini"
    before, release, pid = local.read_bytes(), app.release(), app.pid()
    result = config_set(app, setting, value, check=False)
    assert result.returncode != 0
    assert named in result.stderr, output(result)
    assert local.read_bytes() == before
    assert (app.release(), app.pid()) == (release, pid)  # not even restarted


def test_a_secret_never_shows_in_ps_or_config_show(app):
    app.make("start")
    secret = "s3cr3t-" + os.urandom(8).hex()
    seen: list[str] = []
    done = threading.Event()

    def watch_ps() -> None:
        while not done.is_set():
            seen.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_ps)
    watcher.start()
    try:
        config_set(app, "app.secret_key", secret)
    finally:
        done.set()
        watcher.join()
    assert len(seen) > 10 and not [s for s in seen if secret in s]
    assert secret in (app.dir / "shared" / "local.ini").read_text()  # it was set
    shown = app.make("config-show").stdout
    assert secret not in shown and not [line for line in shown.splitlines() if "secret_key" in line and secret[:3] in line]
    assert re.search(r"^secret_key = \*+ \(secret\)\s+# .*shared/local\.ini$", shown, re.M), shown
    assert re.search(r"^log_level = INFO\s+# config/prod\.ini$", shown, re.M), shown
    assert app.release() == app.current()


# --- history and the post-deploy hook -------------------------------------------------------


HOOK = """#!/bin/sh
echo "RELEASE=$RELEASE RESULT=$RESULT HOSTS=$HOSTS APP_ENV=$APP_ENV" >>"$(dirname "$0")/ran.log"
exit ${HOOK_EXIT:-0}
"""


@pytest.fixture()
def hook(baked_project):
    hooks = baked_project / "deploy" / "hooks"
    hooks.mkdir(exist_ok=True)
    script = hooks / "post-deploy"
    script.write_text(HOOK)
    script.chmod(0o755)
    yield hooks / "ran.log"
    script.unlink()
    (hooks / "ran.log").unlink(missing_ok=True)


def test_history_records_each_change_and_the_hook_runs_after_deploys_and_rollbacks(app, hook, prod_ini):
    app.make("start")
    start_at = len(history(app))
    app.deploy()
    deployed = app.current()
    prod_ini.write_text(prod_ini.read_text() + "\n[deploy]\nrelease_command = false\n")
    assert app.deploy(check=False).returncode != 0
    prod_ini.write_text(prod_ini.read_text().replace("release_command = false", "release_command ="))
    app.make("rollback")
    rolled_to = app.current()
    app.make("restart")
    app.make("stop")
    app.make("start")
    lines = history(app)[start_at:]
    assert [(line[2], line[5]) for line in lines] == [
        ("deploy", "ok"), ("deploy", "failed"), ("rollback", "ok"), ("restart", "ok"), ("stop", "ok"), ("start", "ok")]
    for line in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line[0]) and "@" in line[1]
        assert re.fullmatch(r"\d+\.\d{3}s", line[6])
    assert lines[0][4] == deployed and lines[2][3:5] == [deployed, rolled_to]

    ran = hook.read_text().splitlines()
    assert ran == [f"RELEASE={deployed} RESULT=ok HOSTS={app.host.host_alias} APP_ENV=prod",
                   f"RELEASE={deployed} RESULT=failed HOSTS={app.host.host_alias} APP_ENV=prod",
                   f"RELEASE={rolled_to} RESULT=ok HOSTS={app.host.host_alias} APP_ENV=prod"], ran

    # A hook that fails is reported; the deploy still succeeds.
    result = make(app.project, "deploy", HOOK_EXIT="7", **app.vars)
    assert "warning: deploy/hooks/post-deploy failed (exit 7)" in result.stderr
    assert app.release() == app.current() != rolled_to
