"""What a worker's or a job's unit runs (remote.sh exec_worker NAME INDEX, exec_job NAME):
the command from the release `current` names when it starts, in that release's directory
with its venv first on PATH and the app's environment and config (what the web app sees),
its output written to its log in shared/log/, rotated there past LOG_MAX_KB as the web
app's logs are.

The runner stays the unit's main process and copies the command's output into the log
(not StandardOutput=append:, which a system manager opens as root, following whatever
link the app's account left in shared/log). It ignores TERM: systemd sends TERM to every
process of the unit, the command ends as it likes, and the runner writes its last lines,
then exits with its status (KILL, after the stop timeout, ends both).
"""
import fcntl
import os
import select
import signal
import sys
import time

from host import VARS, safe
from host.context import Failure, Host
from host.workers import Spec, log_name


def load_spec(host: Host, release: str) -> Spec:
    """The release's workers and jobs, from its config.py imported here: in the unit we are
    the app's account already, and one Python start is enough."""
    import importlib.util
    directory = host.releases / release
    for path in directory.glob("venv/lib/python*/site-packages/*/config.py"):
        if path.parent.name != __import__("host").PACKAGE:
            continue
        spec = importlib.util.spec_from_file_location("release_config", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        try:
            return Spec.from_json(module.workers(module.load_config(host.settings.env)))
        except module.ConfigError as exc:
            raise Failure(f"the {host.settings.env} configuration of {release} is invalid: {exc}") from None
    return Spec()


def rotate_if_big(host: Host, name: str, fd: int) -> int:
    """FD (the log NAME, open for appending) past LOG_MAX_KB: rename the old ones along, open a new one."""
    from host.logs import rotation
    if os.fstat(fd).st_size // 1024 < host.settings.log_max_kb:
        return fd
    log = host.log_dir / name
    for source, target in rotation(log, host.settings.log_keep):
        if source.exists() and not source.is_symlink():
            os.replace(source, target)
    os.close(fd)
    return open_log(host, name)


def open_log(host: Host, name: str) -> int:
    return safe.open_file(host.shared, f"log/{name}", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def run(host: Host, release, command: str, log: str, extra: dict[str, str]) -> int:
    """COMMAND in RELEASE (a directory) with its output in LOG; its exit status."""
    env = {**os.environ, **extra, "PATH": f"{release}/venv/bin:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    os.chdir(release)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(write_end, 1)
            os.dup2(write_end, 2)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
                signal.signal(signum, signal.SIG_DFL)
            os.execve("/bin/sh", ["/bin/sh", "-c", command], env)
        finally:
            os._exit(127)
    os.close(write_end)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the command decides when it is done
    fd = open_log(host, log)
    while True:
        ready, _, _ = select.select([read_end], [], [], 0.5)
        data = os.read(read_end, 65536) if ready else b""
        if data:
            os.write(fd, data)
            fd = rotate_if_big(host, log, fd)
            continue
        done, status_word = os.waitpid(pid, 0 if ready else os.WNOHANG)  # ready with nothing: the pipe closed
        if done:
            break
    while select.select([read_end], [], [], 0)[0]:  # what it wrote last (a child of its own may hold the pipe)
        data = os.read(read_end, 65536)
        if not data:
            break
        os.write(fd, data)
    status = os.waitstatus_to_exitcode(status_word)
    os.close(fd)
    return status if status >= 0 else 128 - status


def exec_worker(host: Host, name: str, index: str) -> int:
    release = host.releases / host.need_current()  # once: a deploy may switch it meanwhile
    os.chdir(release)  # config.py reads config/ there
    worker = load_spec(host, release.name).worker(name)
    if worker is None:
        raise Failure(f"release {release.name} has no [process:{name}]")
    return run(host, release, worker.command, log_name("worker", name, int(index)),
               {f"{VARS}_PROCESS": name, f"{VARS}_PROCESS_INDEX": index})


def job_lock(host: Host, name: str) -> int | None:
    """Job NAME's run lock (shared/run/job-NAME.lock), taken: its fd, held while the run goes
    on; None while another run holds it. The timer's oneshot unit never overlaps itself;
    this keeps make run-job and a timer's run apart too."""
    fd = safe.open_file(host.shared, f"run/job-{name}.lock", os.O_RDWR | os.O_CREAT, 0o600, host.app_owner())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def exec_job(host: Host, name: str) -> int:
    release = host.releases / host.need_current()
    os.chdir(release)
    job = load_spec(host, release.name).job(name)
    if job is None:
        raise Failure(f"release {release.name} has no [schedule:{name}]")
    if job_lock(host, name) is None:
        log = open_log(host, log_name("job", name))
        os.write(log, f"{name}: not run at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: "
                      "make run-job is running it now\n".encode())
        return 0
    return run(host, release, job.command, log_name("job", name), {f"{VARS}_JOB": name})
