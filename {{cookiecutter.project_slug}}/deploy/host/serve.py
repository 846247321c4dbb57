"""Running releases: start, the smoke boot, the release command, the switch of `current`
and the USR2 hand-over that drops no request; put_back when a switched release fails."""
import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path

from host import DIST, VARS, release_config, safe, sandbox
from host.context import Failure, Host
from host.procs import (
    check_paths,
    children_of,
    cmdline,
    is_master,
    master_pid,
    parent_of,
    pids_running,
    port_taken,
    read_pid,
    running,
    signal_quietly,
    stop_pid,
    wait_healthy,
)
from host.systemd import Units, quiet, write_units

UNCHANGED = "it was not switched to, and what ran before runs unchanged"
READY = "run/handover.ready"  # in shared/: each worker of a new master says here that it serves (gunicorn.conf.py)
PHASED_OUT = "handover"  # in state/: `OLD WORKER…` while the old master's workers are stopped for the new one


def gunicorn(release: Path) -> list[str]:
    """A release's gunicorn through its resolved path, never `current`: a hand-over re-execs
    into the release `current` names then (pre_exec in gunicorn.conf.py)."""
    return [str(release / "venv" / "bin" / "gunicorn"), "-c", str(release / "deploy" / "gunicorn.conf.py")]


def open_app_file(host: Host, path: Path, flags: int) -> int:
    """Open a file in shared/ for writing, following no link at any depth (safe.py); as
    root, make it the app's."""
    return safe.open_file(host.shared, str(path.relative_to(host.shared)), flags | os.O_WRONLY | os.O_CREAT, 0o600,
                          host.app_owner())


def units(host: Host) -> Units:
    s = host.settings
    return Units(DIST, s.env, str(host.app), host.service.unit,
                 host.service.kind, host.service.app_user, "" if s.port is None else str(s.port), s.python,
                 str(s.log_max_kb), str(s.log_keep), s.boot_timeout, s.stop_timeout,
                 str(s.memory_max_kb or ""), str(s.tasks_max or ""), s.bind_host)


def write_unit(host: Host) -> None:
    """The unit and its log-rotation timer where they changed, and the timer kept on."""
    from host.accounts import ensure_app_user
    ensure_app_user(host)
    try:
        if write_units(host.service, units(host)):
            host.say(f"  wrote {host.service.unit_dir / (host.service.unit + '.service')}")
    except OSError as exc:
        raise Failure(str(exc)) from None
    quiet([*host.service.systemctl, "enable", "--quiet", "--now", f"{host.service.unit}-logs.timer"])


def stop_service(host: Host) -> None:
    """Stop and disable the unit (it stays stopped across reboots); harmless without one."""
    service = host.service
    if service.kind == "daemon" or not (service.unit_dir / f"{service.unit}.service").exists():
        return
    quiet([*service.systemctl, "disable", "--quiet", "--now", service.unit])
    quiet([*service.systemctl, "reset-failed", service.unit])


def master(host: Host, pidfile: Path | None = None) -> int | None:
    return master_pid(pidfile or host.pidfile, host.releases)


def healthy(host: Host, release: str, pidfile: Path, phase_out: "PhaseOut | None" = None) -> bool:
    """/healthz on PORT names RELEASE while the master in PIDFILE runs (a restart keeps the
    release: the old master's answer alone proves nothing)."""
    ok, _ = wait_healthy(host.settings.port, release, host.settings.boot_timeout, pidfile=pidfile,
                         releases=host.releases, **({"tick": phase_out.tick, "interval": phase_out.INTERVAL,
                                                     "alive": phase_out.within_grace} if phase_out else {}))
    return ok


def start_master(host: Host) -> bool:
    """Start the release `current` points to, detached. Callers know no master of ours runs,
    so a pidfile left is stale: gunicorn refuses to start while the pid in it is alive,
    which a reused pid (another program) may well be."""
    release = host.current_dir()
    safe.unlink(host.shared, "run/gunicorn.pid")
    host.record_edge()  # first: gunicorn started by its unit reads it when the unit names no BIND_HOST
    if host.service.kind == "daemon":
        log = open_app_file(host, host.log_dir / "gunicorn.log", os.O_APPEND)
        try:
            subprocess.run(gunicorn(release), cwd=release, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                           check=False)
        finally:
            os.close(log)
    else:
        write_unit(host)
        # enable: it comes back after a reboot; start returns once gunicorn has daemonized.
        quiet([*host.service.systemctl, "enable", "--quiet", host.service.unit])
        started = subprocess.run([*host.service.systemctl, "start", host.service.unit], capture_output=True,
                                 text=True, check=False)
        if started.returncode != 0:
            host.say((started.stdout + started.stderr).strip(), err=True)
    return healthy(host, release.name, host.pidfile)


def exec_master(host: Host) -> None:
    """The unit's ExecStart: gunicorn of the release `current` points to now, which
    daemonizes; systemd follows its pidfile (Type=forking)."""
    release = host.current_dir()
    host.pidfile.unlink(missing_ok=True)
    os.chdir(release)
    command = gunicorn(release)
    os.execv(command[0], command)


def running_port(host: Host) -> int | None:
    """The port the running app was started on: root's record, in state/."""
    return read_pid(host.state / "port")


def record_port(host: Host) -> None:
    safe.write_text(host.state, "port", f"{host.settings.port}\n", 0o644)
    host.record_edge()  # and its place behind a proxy host, if any


def use_running_port(host: Host) -> None:
    """status and restart act on the running app, which cannot move: ask it on its own port,
    whatever PORT says (the config's default when the deploy had PORT=… on its command line)."""
    was = running_port(host)
    if was and was != host.settings.port:
        host.say(f"(the app runs on port {was}, not PORT={host.settings.port or ''}: asking it there)")
        host.settings = dataclasses.replace(host.settings, port=was)


def check_port(host: Host) -> None:
    """Refuse before touching anything when PORT cannot be ours."""
    port = host.settings.port
    if port is None:
        raise Failure("PORT is not set")
    pid = master(host)
    if pid:
        was = running_port(host)
        if was and was != port:
            raise Failure(f"the app runs on port {was} (pid {pid}); run make stop before moving it to port {port}")
    elif port_taken(port):
        raise Failure(f"port {port} on {os.uname().nodename} is already in use by another program; nothing was changed")


# --- the smoke boot: the new release on a private socket, before it takes any traffic ----------


def smoke_socket(host: Host) -> Path:
    """In a directory of the app's alone (0700), and the socket 0600 (--umask): no other
    account on the host reaches the release before it is switched to."""
    return host.run_dir / "smoke" / "smoke.sock"


def app_uid(host: Host) -> int:
    """The account that must be serving the smoke socket: the app's own, in a root deploy."""
    owner = host.app_owner()
    return owner[0] if owner else os.getuid()


def smoke_boot(host: Host, release: str, meanwhile=None) -> None:
    """The release on a private socket, answering /healthz, or refused; MEANWHILE() runs while
    it boots (a failure there stops it: Host.finish)."""
    directory, sock = host.releases / release, smoke_socket(host)
    pidfile, smoke_log = sock.with_name("smoke.pid"), host.log_dir / "smoke.log"
    safe.make_dir(host.shared, "run/smoke", 0o700, host.app_owner())
    left = read_pid(pidfile)  # the smoke gunicorn of a deploy killed (SIGKILL) mid-boot outlives it
    if is_master(left, host.releases) and f"--pid {pidfile}" in cmdline(left):
        stop_pid(left, host.settings.stop_timeout, host.say)
    for path in ("run/smoke/smoke.sock", "run/smoke/smoke.pid", "log/smoke.log"):
        safe.unlink(host.shared, path)
    sandboxed = sandbox.sandboxed(host.service, dict(os.environ))
    if sandboxed:
        sandbox.stop(host.service, units(host), "smoke")  # the smoke unit of a deploy killed mid-boot
    log = open_app_file(host, smoke_log, os.O_APPEND)
    # In the foreground as our child (see daemon in gunicorn.conf.py), so that we see it exit:
    # gunicorn shuts down by itself at once when a worker cannot import the app, and
    # BOOT_TIMEOUT is only for slow boots. --pid keeps it off the main pidfile. In the app's
    # sandbox (a transient unit whose systemd-run is our child), or as the account the service
    # runs as: never as root.
    env = {**os.environ, f"{VARS}_FOREGROUND": "1"}
    argv = sandbox.command(host.service, units(host),
                           [*gunicorn(directory), "--bind", f"unix:{sock}", "--umask", "0077", "--workers", "1",
                            "--pid", str(pidfile), "--error-logfile", str(smoke_log), "--access-logfile", "/dev/null"],
                           str(directory), env, VARS, name="smoke")
    try:
        host.smoke = subprocess.Popen(argv, cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        host.smoke.unit = sandboxed
    finally:
        os.close(log)
    if meanwhile is not None:
        meanwhile()
    ok, _ = wait_healthy(str(sock), release, host.settings.boot_timeout, alive=lambda: host.smoke.poll() is None,
                         peer_uid=app_uid(host))
    if not ok:
        refuse(host, release, smoke_log, f"release {release} failed its smoke boot (no healthy /healthz on a "
                                         f"private socket); {UNCHANGED}")


def smoke_stop(host: Host, wait: bool = True) -> None:
    """TERM the smoke boot's gunicorn; WAIT for it to go (else Host.finish does, so that its
    shutdown overlaps the switch and the hand-over)."""
    if host.smoke is not None:
        if host.smoke.poll() is None and not getattr(host.smoke, "termed", False):
            if getattr(host.smoke, "unit", False):
                sandbox.stop(host.service, units(host), "smoke", wait=False)  # systemd-run waits for it
            else:
                host.smoke.send_signal(signal.SIGTERM)
            host.smoke.termed = True  # once: a second TERM would cut its graceful stop short
        if wait:
            host.smoke.wait()
            host.smoke = None


def refuse(host: Host, release: str, log: Path, sentence: str) -> None:
    """Mark RELEASE refused (never a rollback target; pruned), show the log's tail, fail."""
    smoke_stop(host)
    (host.releases / release / ".refused").touch()
    host.tail_log(log)
    raise Failure(sentence)


def smoke_paths(host: Host, release: str, paths: list[str]) -> None:
    """The app's own pages ([deploy] smoke_paths) on the smoke boot's socket, after the
    release command (a page may need the new schema): a 5xx or no answer refuses it."""
    failed = check_paths(str(smoke_socket(host)), paths, peer_uid=app_uid(host)) if paths else None
    if failed:
        refuse(host, release, host.log_dir / "smoke.log",
               f"release {release} failed its smoke test: {failed} on a private socket; {UNCHANGED}")
    smoke_stop(host, wait=False)


def release_settings(host: Host, release: str) -> tuple[str, list[str]]:
    """The release's own [deploy] release_command and smoke_paths."""
    try:
        found = release_config.read(host, release)
    except release_config.Unreadable as error:
        (host.releases / release / ".refused").touch()
        raise Failure(f"cannot read [deploy] release_command and smoke_paths of {release} ({error.said}); "
                      f"{UNCHANGED}") from None
    return found["release_command"], found["smoke_paths"]


def release_command(host: Host, release: str, command: str) -> None:
    """The release's [deploy] release_command (migrations, say), in its venv and directory
    with the target's config, after the smoke boot and before the switch, under the lock. A
    rollout runs it on its first host only (SKIP_RELEASE_COMMAND on the others). The
    database's backup before a migration is the command's to take (`<package> migrate`
    takes one only when a migration is pending), into <VARS>_BACKUP_FILE."""
    if not command:
        return
    if host.settings.skip_release_command:
        host.say("  release_command: not here (it ran on the first host)")
        return
    from host.accounts import app_dir_for
    directory = host.releases / release
    backup = app_dir_for(host, host.shared / "backups") / f"{release}.backup"
    host.say(f"  release_command: {command}")
    env = {**os.environ, f"{VARS}_BACKUP_FILE": str(backup), "PATH": f"{directory}/venv/bin:{os.environ['PATH']}"}
    sandboxed = sandbox.command(host.service, units(host), ["/bin/sh", "-c", command], str(directory), env, VARS)
    if subprocess.run(sandboxed, cwd=directory, env=env, check=False).returncode:
        (directory / ".refused").touch()
        hint = ""
        if backup.is_file():
            hint = ("; the database was backed up before it: if the command left it half-changed, "
                    f"make db-restore BACKUP={backup.name} CONFIRM=1")
        raise Failure(f"the release command ({command}) failed for {release}: nothing was switched, "
                      f"and what ran before runs unchanged{hint}")


# --- the switch and the hand-over ------------------------------------------------------------------


def relink(link: Path, target: str) -> None:
    """LINK pointing at TARGET atomically: a temp link renamed over it."""
    tmp = link.with_name(f".{link.name}.tmp.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def switch_to(host: Host, release: str, bridge: bool = True) -> None:
    """Point `current` at RELEASE atomically, and first `previous` at what it pointed to: nginx
    serves /static/ from current, else previous, so a page of the release before still finds
    its files (the edge's asset bridging)."""
    was = host.current_id()
    if bridge and was and was != release:
        relink(host.app / "previous", f"releases/{was}")
    relink(host.current, f"releases/{release}")


def every_worker_serves(lines: str, new: int, alive) -> bool:
    """Do the lines of READY (`master worker workers`: a worker's parent, its pid and how
    many workers that master runs) say that every worker of the master NEW serves? ALIVE(pid):
    that worker still runs, as NEW's child."""
    ready, wanted = set(), 0
    for line in lines.splitlines():
        fields = line.split()
        if len(fields) == 3 and all(field.isdigit() for field in fields) and int(fields[0]) == new \
                and alive(int(fields[1])):
            ready.add(int(fields[1]))
            wanted = int(fields[2])
    return wanted > 0 and len(ready) >= wanted


def phased_out(record: str | None, old: int) -> set[int]:
    """The workers the record in state/PHASED_OUT says OLD stopped for a hand-over; none when
    it names another master (one long gone: pids are reused)."""
    fields = (record or "").split()
    if len(fields) < 2 or not all(field.isdigit() for field in fields) or int(fields[0]) != old:
        return set()
    return {int(field) for field in fields[1:]}


class PhaseOut:
    """Once every worker of the new master serves, the old master's workers stop (WINCH), and
    the health check's requests reach the new ones: the old workers wait first in the socket's
    queue and would answer them all. The old master keeps the socket, and takes its workers
    back (give_back) if the new master fails after all: it must answer within GRACE seconds,
    since it alone takes the requests now (a slow first request, a loaded machine: not 2 s)."""

    INTERVAL = 0.01  # between looks at READY; /healthz every POLL_EVERY of them until the WINCH, then every one
    POLL_EVERY = 5
    GRACE = 10.0

    def __init__(self, host: Host, old: int, second: Path):
        self.host, self.old, self.second, self.done, self.ticks = host, old, second, False, 0
        self.winched: float | None = None

    def within_grace(self) -> bool:
        return self.winched is None or time.monotonic() < self.winched + self.GRACE

    def tick(self) -> bool:
        """Poll /healthz now?"""
        self.ticks += 1
        if self.done:
            return True
        new = master(self.host, self.second)
        lines = safe.read_text(self.host.shared, READY, limit=1 << 16) if new else None
        if lines and every_worker_serves(lines, new, lambda pid: parent_of(pid) == new and running(pid)):
            workers = children_of(self.old) - {new}
            try:  # no record (a full disk): no WINCH, and the wait is as it was before
                safe.write_text(self.host.state, PHASED_OUT, " ".join(map(str, [self.old, *sorted(workers)])) + "\n")
            except OSError:
                workers = set()
            if workers:
                signal_quietly(self.old, signal.SIGWINCH)
                self.winched = time.monotonic()
            self.done = True
        return self.ticks % self.POLL_EVERY == 0


def give_back(host: Host, old: int, child: int | None) -> None:
    """OLD gets back as many workers as it stopped for a hand-over (state/PHASED_OUT): one
    TTIN at a time (signals of one kind do not queue), each waited for."""
    stopped = phased_out(safe.read_text(host.state, PHASED_OUT, limit=4096), old)
    if stopped:
        host.say(f"  giving the old master (pid {old}) its {len(stopped)} worker(s) back")
    deadline = time.monotonic() + host.settings.boot_timeout
    for _ in stopped:
        had = len(children_of(old) - stopped - {child})
        signal_quietly(old, signal.SIGTTIN)
        while len(children_of(old) - stopped - {child}) <= had and running(old) and time.monotonic() < deadline:
            time.sleep(0.02)
    safe.unlink(host.state, PHASED_OUT)


def stop_handover_child(host: Host, pid: int) -> None:
    """A hand-over interrupted for good (the deploy killed between USR2 and TERM) leaves the
    new master running as a child of the old one, which then ignores every USR2 ("Child
    exists"). Stop that child: its parent serves, with its workers given back first if the
    hand-over had stopped them, so no request is lost."""
    child = read_pid(Path(f"{host.pidfile}.2"))
    child = child if is_master(child, host.releases) and parent_of(child) == pid else None
    give_back(host, pid, child)
    if child:
        host.say(f"stopping pid {child}, the new master of an unfinished hand-over")
        stop_pid(child, host.settings.stop_timeout, host.say)


def start_fresh(host: Host, release: str) -> None:
    """Nothing ran before: start the new release; if it cannot serve, mark it refused and, on
    a first deploy, leave no `current` pointing at it (put_back restores an earlier one)."""
    if start_master(host):
        return
    stop_service(host)
    pid = master(host)
    if pid:
        stop_pid(pid, host.settings.stop_timeout, host.say)
    # Every gunicorn of the release, even one whose pidfile is gone: a master that halts
    # removes its pidfile before it has exited.
    for pid in pids_running(f"{host.releases}/{release}/venv/bin/gunicorn "):
        stop_pid(pid, 5, host.say)
    (host.releases / release / ".refused").touch()
    if not host.switched_from:
        host.current.unlink(missing_ok=True)
    host.tail_log(host.log_dir / "gunicorn.log")
    raise Failure(f"release {release} did not answer /healthz on port {host.settings.port} "
                  f"within {host.settings.boot_timeout}s")


def in_unit(host: Host, pid: int) -> bool:
    try:
        return f"/{host.service.unit}.service" in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def wait_for_previous_master(host: Host, old: int) -> None:
    """The last hand-over's old master may still be draining: until it is gone and the
    running master has seen so (it then renames gunicorn.pid.2 over gunicorn.pid: the .2
    file goes), gunicorn ignores USR2 ("Parent master exists")."""
    second = Path(f"{host.pidfile}.2")
    if read_pid(second) != old:
        return
    parent = parent_of(old)
    if is_master(parent, host.releases):
        host.say(f"  waiting for the previous master (pid {parent}) to finish its requests")
    started, stop = time.monotonic(), host.settings.stop_timeout
    killed = False
    while read_pid(second) == old and time.monotonic() < started + stop + 10:
        if not killed and time.monotonic() > started + stop + 5 and is_master(parent, host.releases):
            signal_quietly(parent, signal.SIGKILL)
            killed = True
        time.sleep(0.05)


def handover(host: Host, release: str) -> None:
    """USR2: the old master forks a new one that runs `current` (pre_exec in gunicorn.conf.py);
    both share the listening socket, so no request is refused. Once every worker of the new
    master serves, the old workers stop (PhaseOut); once /healthz names the release, the old
    master goes."""
    old = master(host)
    if not old:
        start_fresh(host, release)
        return
    stop_handover_child(host, old)
    wait_for_previous_master(host, old)
    if host.service.kind != "daemon" and not in_unit(host, old):
        # A master started outside the unit (before systemd was usable here) cannot hand
        # over into it: stop it and let the unit start the release (a short restart).
        host.say(f"  moving the app from a detached gunicorn (pid {old}) into {host.service.unit}.service: "
                 "a short restart")
        stop_pid(old, host.settings.stop_timeout, host.say)
        host.restarted = True
        start_fresh(host, release)
        return
    was = host.edge_record()[1]
    if was != host.settings.bind_host:
        # A new master inherits the old one's sockets and binds nothing else: a new address
        # (this host now behind a proxy host, or no longer) needs a fresh start. The proxy
        # host's passive checks send the requests to the other hosts meanwhile.
        host.say(f"  gunicorn's addresses change ({was or 'none'} to {host.settings.bind_host or 'none'} beside "
                 "127.0.0.1): a fresh start, not a hand-over")
        stop_service(host)
        stop_pid(old, host.settings.stop_timeout, host.say)
        host.restarted = True
        start_fresh(host, release)
        return
    second = Path(f"{host.pidfile}.2")
    safe.unlink(host.shared, "run/gunicorn.pid.2")
    try:
        safe.write_text(host.shared, READY, "", 0o600, host.app_owner())
    except OSError:
        pass  # (a full disk) no worker says it serves: the old workers stay until the old master goes
    os.kill(old, signal.SIGUSR2)
    took_over = healthy(host, release, second, PhaseOut(host, old, second))
    safe.unlink(host.shared, READY)
    if not took_over:
        give_back(host, old, master(host, second))  # before the new master goes: no request waits
        new = master(host, second)
        if new:
            stop_pid(new, host.settings.stop_timeout, host.say)
        (host.releases / release / ".refused").touch()
        host.tail_log(host.log_dir / "gunicorn.log")
        raise Failure(f"the new master for {release} did not become healthy; the old master (pid {old}) keeps serving")
    host.switched_from = None  # the new release serves: from here on, an interruption keeps it
    # The pidfile names the new master before the old one goes. systemd re-reads it when
    # the main process exits: otherwise the old master deletes it on exit, the unit counts
    # as finished and systemd kills the new master with it. gunicorn itself renames the .2
    # file only once it sees its parent gone: too late, so copy it now, atomically.
    new = master(host, second)
    if new:
        safe.write_text(host.shared, "run/gunicorn.pid", f"{new}\n", 0o644, host.app_owner())
    # TERM, and no waiting: the old master finishes its requests while the new one serves
    # (the next hand-over waits for it, if it comes that soon).
    signal_quietly(old, signal.SIGTERM)
    safe.unlink(host.state, PHASED_OUT)


def activate(host: Host, release: str, run_release_command: bool = False, meanwhile=None) -> None:
    """Smoke-boot (MEANWHILE() while it boots), [the release command,] the smoke paths,
    switch, hand over; a failure after the switch is put back (Host.finish)."""
    from host.accounts import ensure_app_user
    from host.processes import apply, prepare
    ensure_app_user(host)
    if host.service.kind != "daemon":
        write_unit(host)  # settings may have changed
    host.step("smoke_boot", smoke_boot, host, release, meanwhile)
    command, paths = release_settings(host, release)  # after the boot: a bad config fails there, in the app's words
    # Workers and jobs: refused here, before the release command changes anything.
    spec = prepare(host, release)
    if run_release_command:
        host.step("release_command", release_command, host, release, command)
    host.step("smoke_paths", smoke_paths, host, release, paths)
    host.switched_from = host.current_id()
    host.step("switch", switch_to, host, release)
    host.step("handover", handover, host, release)
    record_port(host)
    host.switched_from = None
    if spec.workers or spec.jobs or host.service.kind != "daemon":  # (what the config no longer names goes)
        host.step("workers", apply, host, spec)


def put_back(host: Host) -> None:
    """A switched release that did not take over: `current` back to what ran, and that serving."""
    was, host.switched_from = host.switched_from, None
    host.say(f"switching current back to {was}")
    switch_to(host, was, bridge=False)  # (the release that did not take over served no page)
    old = master(host)
    if old:
        stop_handover_child(host, old)
    else:
        try:
            start_master(host)
        except Failure:
            pass
    host.say(f"now serving: {host.current_id()}")
