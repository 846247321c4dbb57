"""The host commands. Those marked target=True are make targets of the same name (make help
shows their help); recorded=True ones add a line to state/deploys.log."""
import base64
import errno
import os
import secrets
import shutil
import signal
import subprocess
import sys
from functools import partial

from host import PACKAGE, VARS, safe, sandbox
from host.cli import arg, command
from host.context import Failure, Host
from host.install import install
from host.logs import rotate
from host.procs import master_pid, port_taken, stop_pid, uptime, wait_healthy
from host.releases import Releases, describe, empty_trash, lock_info, prune, remove
from host.serve import (
    activate,
    check_port,
    exec_master,
    handover,
    master,
    record_port,
    running_port,
    start_master,
    stop_handover_child,
    stop_service,
    units,
    use_running_port,
    write_unit,
)

UPLOAD = (arg("upload", help="the tarball's name in .incoming/"), arg("sha256"))


# --- deploys ----------------------------------------------------------------------------------


def say_service_mode(host: Host) -> None:
    """Once per deploy and start: how the app runs here, and what is unsafe about it."""
    if host.service.kind != "daemon":
        return
    host.say(f"note: the app runs as a detached gunicorn, not a systemd service: {host.service.why}; "
             "nothing restarts it after a crash or reboot")
    if os.getuid() == 0:
        host.say(f"warning: the app runs as root: a flaw in it or a dependency is a root shell on "
                 f"{os.uname().nodename}; deploy as an ordinary user (REMOTE_USER=…), or to a host with systemd, "
                 "where a root deploy runs the app as an unprivileged account")


def ensure_local_ini(host: Host) -> None:
    local = host.shared / "local.ini"
    if local.exists() or local.is_symlink():
        return
    safe.write_text(host.shared, "local.ini", "# Host-local settings, never overwritten by a deploy.\n"
                    f"[app]\nsecret_key = {secrets.token_hex(32)}\n", 0o600, host.app_owner())
    host.say(f"  wrote {local} with a generated secret_key (mode 0600)")


def install_upload(host: Host, upload: str, sha256: str) -> str:
    return install(host.app, upload, sha256, sys.executable, host.settings.host_name, host.settings.env)


@command("install", "verify an upload, unpack it into releases/<id>, build its venv offline (make copy)", *UPLOAD)
def cmd_install(host: Host, args) -> None:
    host.take_lock(args.upload)
    release = host.step("install", install_upload, host, args.upload, args.sha256)
    host.say(f"release_id={release}")


@command("deploy", "install an upload, smoke-boot it, [release_command,] switch, hand over, prune (make deploy)",
         *UPLOAD, recorded=True)
def cmd_deploy(host: Host, args) -> None:
    try:
        host.claim_environment()  # before the port: another environment's directory is the first thing wrong
        say_service_mode(host)
        check_port(host)
        host.take_lock(args.upload)
    except Failure:
        safe.unlink(host.app / ".incoming", args.upload)  # refused before anything: the upload is of no use
        raise
    release = host.step("install", install_upload, host, args.upload, args.sha256)
    ensure_local_ini(host)
    # [proxy] domain: nginx site and certificate, before the switch; done while the smoke boot boots.
    activate(host, release, run_release_command=True, meanwhile=partial(host.step, "edge", proxy.apply_edge, host, release))
    host.step("prune", prune, host.app, host.settings.keep)
    empty_trash(host.app)  # by a process of its own, while the deploy answers
    host.say(f"deployed {release}: serving on port {host.settings.port}")


@command("rollback", "make the previous release current and serving, health-checked (make rollback)", recorded=True)
def cmd_rollback(host: Host, args) -> None:
    host.need_current("nothing to roll back")
    host.claim_environment()
    check_port(host)
    host.take_lock("rollback")
    current = host.current_id()
    previous = Releases.read(host.releases).previous(current)
    if previous is None:
        raise Failure(f"no release older than {current} to roll back to")
    host.say(f"rolling back from {current} to {previous}")
    activate(host, previous)
    host.say(f"rolled back: serving {previous} on port {host.settings.port}")


# --- the running app ----------------------------------------------------------------------------


@command("start", "start the current release (no-op when it runs); under systemd it starts at boot again",
         target=True, recorded=True)
def cmd_start(host: Host, args=None) -> None:
    host.take_lock("start")  # a deploy's hand-over and a start must not cross
    from host.processes import start_all
    pid = master(host)
    if pid:
        host.say(f"already running: release {host.current_id()}, pid {pid}")
        start_all(host)  # the workers and jobs too, if they are not
        return
    host.need_current()
    say_service_mode(host)
    check_port(host)
    ensure_local_ini(host)
    if not start_master(host):
        stop_service(host)
        host.tail_log(host.log_dir / "gunicorn.log")
        raise Failure(f"release {host.current_id()} did not answer /healthz on port {host.settings.port} "
                      f"within {host.settings.boot_timeout}s")
    record_port(host)
    host.say(f"started release {host.current_id()} on port {host.settings.port} (pid {master(host)})")
    start_all(host)


@command("stop", "stop gracefully (TERM, then KILL after the timeout); under systemd it stays stopped across reboots",
         target=True, recorded=True)
def cmd_stop(host: Host, args=None) -> None:
    try:
        host.take_lock("stop")
    except OSError as exc:  # a full disk is when stopping must still work
        if exc.errno != errno.ENOSPC:
            raise
        host.say("warning: the disk is full: stopping without the deploy lock", err=True)
    from host.processes import stop_all
    stop_all(host)
    pid = master(host)
    if not pid:
        stop_service(host)
        safe.unlink(host.shared, "run/gunicorn.pid")
        host.say("not running")
        return
    stop_handover_child(host, pid)  # else it would take over once its parent is gone
    stop_service(host)
    stop_pid(pid, host.settings.stop_timeout, host.say)
    safe.unlink(host.shared, "run/gunicorn.pid")
    host.say(f"stopped (was pid {pid})")


def restart_current(host: Host) -> None:
    """A hand-over to a fresh master of current (a start when it is stopped)."""
    if master(host):
        use_running_port(host)
        if host.service.kind != "daemon":
            write_unit(host)  # settings may have changed
        host.step("handover", handover, host, host.current_id())
        if host.service.kind != "daemon":  # the workers read the config too: restart them
            from host.processes import apply, read_spec
            apply(host, read_spec(host, host.current_id()))
    else:
        cmd_start(host)


@command("restart", "hand over to a fresh master without dropping a request (a plain start when stopped)",
         target=True, recorded=True)
def cmd_restart(host: Host, args) -> None:
    host.need_current()
    host.take_lock("restart")
    restart_current(host)


@command("status", "service, release, pid, uptime, port and /healthz; fails unless healthy", target=True)
def cmd_status(host: Host, args) -> int:
    service = host.service
    if service.kind == "daemon":
        host.say(f"service: none, a detached gunicorn ({service.why})")
    else:
        shown = subprocess.run([*service.systemctl, "show", "-p", "UnitFileState", "-p", "ActiveState", "-p", "MainPID",
                                service.unit], capture_output=True, text=True, check=False).stdout
        unit = dict(line.partition("=")[::2] for line in shown.splitlines())
        host.say(f"service: {service.unit}.service ({service.kind} unit, {unit.get('UnitFileState', '')}, "
                 f"{unit.get('ActiveState', '')}, main pid {unit.get('MainPID', '')})")
    from host.processes import worker_rows
    workers = worker_rows(host)
    for name, pid, release, state, up in workers:
        host.say(f"worker {name}: {state}, pid {pid}, release {release}, up {up}")
    failed = any(row[3].startswith("FAILED") for row in workers)
    if failed:
        host.say("workers: FAILED (make logs PROCESS=NAME shows why)")
    if host.current_id() is None:
        host.say(f"no release is current in {host.app}")
        return 1
    host.say(f"release: {host.current_id()}")
    pid = master(host)
    if not pid:
        host.say("master: not running")
        return 1
    host.say(f"master: pid {pid}, up {uptime(pid)}")
    use_running_port(host)
    if host.settings.port is None:
        raise Failure("PORT is not set, and the app has recorded none: give PORT=…")
    host.say(f"port: {host.settings.port}")
    ok, answer = wait_healthy(host.settings.port, None, 0)
    host.say(f"healthz: {answer}" if ok else f"healthz: FAILED: {answer}")
    proxy.edge_status(host)
    return 0 if ok and not failed else 1


@command("logs", "the last LINES lines of the gunicorn log (PROCESS=NAME: a worker's or a job's); FOLLOW=1 follows it",
         target=True)
def cmd_logs(host: Host, args) -> None:
    if host.settings.process:
        from host.worker_commands import log_files
        logs = [host.log_dir / name for name in log_files(host, host.settings.process)]
    else:
        logs = [host.log_dir / "gunicorn.log"]
    if not logs[0].exists():
        host.say(f"no log yet in {host.log_dir}")
        return
    # As the app's account: the log is the app's file, which as root could be a link to any.
    tail = [*host.service.as_app, "tail", "-n", str(host.settings.lines), *(["-F"] if host.settings.follow else []),
            *map(str, logs)]
    default_signals()  # a closed ssh connection ends a follow
    os.execvp(tail[0], tail)


@command("releases", "list the releases on the host, marking current", target=True)
def cmd_releases(host: Host, args) -> None:
    releases, current = Releases.read(host.releases), host.current_id()
    for release in releases.finished:
        host.say(f"* {release} (current)" if release == current else f"  {release}")
    for release in releases.unfinished:
        host.say(f"  {release} (unfinished, removed by the next deploy)")
    for release in releases.refused:
        host.say(f"  {release} (refused: failed to boot, removed by the next deploy)")


@command("history", "the last LINES deploys, rollbacks, restarts, stops and starts on the host", target=True)
def cmd_history(host: Host, args) -> None:
    log = host.state / "deploys.log"
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    if not lines:
        host.say(f"no history yet in {log}")
        return
    host.say("time                 who  what  from  to  result  duration")
    for line in lines[-host.settings.lines:] if host.settings.lines else []:
        host.say(line)


@command("unlock", "lift a hold (make lock), and remove a stale deploy lock", target=True)
def cmd_unlock(host: Host, args) -> None:
    from host.hold import lift
    lifted = lift(host)
    if host.lock.is_dir():
        host.say(f"removing deploy lock ({describe(lock_info(host.lock))})")
        remove(host.lock)
    elif not lifted:
        host.say("no deploy lock held")


@command("prune", "keep the newest KEEP_RELEASES, never current or the one before; drop unfinished and refused ones")
def cmd_prune(host: Host, args) -> None:
    prune(host.app, host.settings.keep)
    empty_trash(host.app, wait=True)


@command("exec_master", "the unit's ExecStart: gunicorn of the release current names (it daemonizes)")
def cmd_exec_master(host: Host, args) -> None:
    exec_master(host)


@command("rotate_logs", "rotate the logs past LOG_MAX_KB, keeping LOG_KEEP (the unit's timer runs it)")
def cmd_rotate_logs(host: Host, args) -> None:
    rotate(host)


@command("noop", "nothing: make shell and config-set send the host program first, then run it attached")
def cmd_noop(host: Host, args) -> None:
    pass


# --- in the current release, with the app's config --------------------------------------------------


def default_signals() -> None:
    """Before an exec: the signals we ignore or catch act as usual again (an ignored one
    would stay ignored in the program we become)."""
    for signum in (signal.SIGHUP, signal.SIGPIPE, signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def in_release(host: Host) -> tuple[str, dict]:
    """The current release's directory, and an environment with its venv first on PATH."""
    directory = str(host.current_dir())
    return directory, {**os.environ, "PATH": f"{directory}/venv/bin:{os.environ.get('PATH', '')}"}


@command("exec", "run a shell command (base64) in current with the app's config (make exec)", arg("command"))
def cmd_exec(host: Host, args) -> int:
    host.need_current()
    try:
        text = base64.b64decode(args.command, validate=True).decode()
    except ValueError:
        text = ""
    if not text:
        raise Failure("usage: remote.sh exec BASE64-COMMAND")
    directory, env = in_release(host)
    command = sandbox.command(host.service, units(host), ["/bin/sh", "-c", text], directory, env, VARS)
    status = subprocess.run(command, cwd=directory, env=env, check=False).returncode
    if status != 0:
        host.say(f"error: the command exited with status {status}", err=True)
    return status


@command("shell", "flask shell in current, with the app and its config loaded (make shell)")
def cmd_shell(host: Host, args) -> None:
    host.need_current()
    directory, env = in_release(host)
    os.chdir(directory)
    default_signals()  # the terminal's signals reach the shell
    from host.serve import units
    # the terminal ssh -t gave us is the shell's (--pty); piped input stays piped
    flask = sandbox.command(host.service, units(host), [f"{directory}/venv/bin/flask", "--app",
                            f"{PACKAGE}:create_app()", "shell"], directory, env, VARS, terminal=os.isatty(0))
    os.execvpe(flask[0], flask, env)


def app_cli(host: Host, directory: str, *words: str, capture: bool = False, stdin=None):
    """The release's own command line (<package> …: backups, restores, host settings) in its
    directory, in the app's sandbox (host/sandbox.py), as the app's account."""
    from host.serve import units
    argv = sandbox.command(host.service, units(host), [f"{directory}/venv/bin/{PACKAGE}", *words], directory,
                           dict(os.environ), VARS)
    return subprocess.run(argv, cwd=directory, capture_output=capture, text=True, stdin=stdin, check=False)


def edit_local(host: Host, what: str, setting: str, stdin=None) -> None:
    """config-set, config-unset: edit shared/local.ini through the app's own schema check
    (the value comes on stdin, never on a command line), then hand over to a fresh master."""
    host.take_lock(what)
    ensure_local_ini(host)
    # The app's own schema checks the value: the current release's, or before the first
    # deploy the newest one make copy installed (a database URL must be there first).
    if host.current_id():
        directory = str(host.current_dir())
    else:
        finished = Releases.read(host.releases).finished
        if not finished:
            raise Failure(f"no release is on this host yet: run make copy first (the value is checked with the "
                          f"app's own schema), then make {what}, then make deploy")
        directory = str(host.releases / finished[-1])
    if app_cli(host, directory, what, setting, "--env", host.settings.env, "--local",
               str(host.shared / "local.ini"), stdin=stdin).returncode != 0:
        raise Failure("")  # the app's own check said why
    from host.accounts import ensure_app_user
    ensure_app_user(host)
    if master(host):
        restart_current(host)


@command("config_set", "set a setting in shared/local.ini to the value on stdin, checked, then restart",
         arg("setting"), recorded=True)
def cmd_config_set(host: Host, args) -> None:
    edit_local(host, "config-set", args.setting)


@command("config_unset", "remove a setting from shared/local.ini, checked, then restart", arg("setting"),
         recorded=True)
def cmd_config_unset(host: Host, args) -> None:
    edit_local(host, "config-unset", args.setting, stdin=subprocess.DEVNULL)


@command("config_show", "the effective config on the host, secrets masked (make config-show)")
def cmd_config_show(host: Host, args) -> int:
    directory = str(host.releases / host.need_current())
    return app_cli(host, directory, "config-show", "--env", host.settings.env, "--local",
                   str(host.shared / "local.ini")).returncode


# --- what the host has ---------------------------------------------------------------------------

NEARLY_FULL_MIB = 200  # below this free, check-host fails: a deploy needs room for a release


@command("check_host", "what the host has: Python and venv, systemd, lingering, free disk, the port (make check-host)")
def cmd_check_host(host: Host, args) -> int:
    try:
        import venv  # noqa: F401
        has_venv = "ok"
    except ImportError as exc:
        has_venv = str(exc)
    version = ".".join(str(n) for n in sys.version_info[:3])
    host.say(f"python: Python {version} ({host.settings.python}), venv: {has_venv}")
    service = host.service
    if service.kind == "daemon":
        host.say(f"systemd: no ({service.why})")
    else:
        systemd = subprocess.run(["systemctl", "--version"], capture_output=True, text=True, check=False).stdout
        first = " ".join(systemd.split()[:2])
        host.say(f"systemd: yes ({first}), {service.kind} unit" + (", lingering: on" if service.kind == "user" else ""))
    disk = shutil.disk_usage(host.app)
    free = disk.free // (1024 * 1024)
    host.say(f"disk: {free} MiB free in {host.app}")
    port = host.settings.port
    pid = master_pid(host.pidfile, host.releases)
    if pid and running_port(host) == port:
        host.say(f"port {port}: in use by this app (pid {pid})")
    elif port is not None and port_taken(port):
        host.say(f"port {port}: in use by another program")
    else:
        host.say(f"port {port if port is not None else '?'}: free")
    if free < NEARLY_FULL_MIB:
        raise Failure(f"the disk of {host.app} is nearly full ({free} MiB free): a deploy needs room for a release")
    return 0


# Register the commands of their own modules: the database's (they use those above), the hold's, make plan's,
# the workers' and jobs', the edge's (setup-host).
from host import database, hold, plan, proxy, worker_commands  # noqa: F401
