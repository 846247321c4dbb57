"""One host, reached over ssh: every ssh and scp command, built as an argument list.

The host program (build/remote.sh: the sh bootstrap with the host package zipped after it)
runs from the copy the host keeps in REMOTE_DIR when that copy has our sha256; the check
and the command go in one ssh command, and nothing is written. Otherwise the host answers
86, and ours goes up first, over a second connection. Every value that reaches the host's
shell goes there quoted, as data. One shared connection (ControlMaster) per host carries
the probe, the upload and the deploy; its socket lives in a directory only we can read.
"""
from __future__ import annotations

import hashlib
import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ship.messages import ShipError, message
from ship.settings import Settings

SEND_HOST = 86  # the host's copy of the host program is not ours: send it
RESULT = "deploy-result: "  # the host's result line (REPORT=json): data for us, not shown
# The host variables (deploy/host/context.py: Settings), by the make variable they come from.
HOST_VARIABLES = {"APP_ENV": "APP_ENV", "PORT": "PORT", "KEEP_RELEASES": "KEEP_RELEASES", "LINES": "LINES",
                  "HOST_PYTHON": "PYTHON", "LOG_MAX_KB": "LOG_MAX_KB", "LOG_KEEP": "LOG_KEEP",
                  "FOLLOW": "FOLLOW", "SKIP_RELEASE_COMMAND": "SKIP_RELEASE_COMMAND", "CONFIRM": "CONFIRM", "FORCE": "FORCE",
                  "MEMORY_MAX_KB": "MEMORY_MAX_KB", "TASKS_MAX": "TASKS_MAX", "PROCESS": "PROCESS", "JOB": "JOB"}


# Runs the bundle read from stdin as a zip application, from memory.
IN_MEMORY = ("import os, runpy, sys; fd = os.memfd_create('remote.sh'); data = sys.stdin.buffer.read(); "
             "os.write(fd, data); path = '/proc/self/fd/%d' % fd; sys.argv = [path] + sys.argv[1:]; "
             "runpy.run_path(path, run_name='__main__')")


@dataclass
class Answer:
    """What one host command did: its exit status and, with report=True, its result record."""
    status: int
    result: dict = field(default_factory=dict)
    output: str = ""  # with capture=True: its standard output


def login_user(settings: Settings, host: str) -> str:
    """The account ssh logs in to HOST as: REMOTE_USER, else what ssh's own configuration
    says (`ssh -G` reads it here, without a connection); "" when it cannot tell."""
    if settings["REMOTE_USER"]:
        return settings["REMOTE_USER"]
    try:
        shown = subprocess.run(["ssh", "-G", *shlex.split(settings["SSH_OPTS"]), "--", host], capture_output=True,
                               text=True, timeout=10, check=False, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return next((line[5:] for line in shown.splitlines() if line.startswith("user ")), "")


def app_dir(directory: str, user: str) -> str:
    """A relative REMOTE_DIR is under the login's home; root's home is closed to the app's
    own account, so root's is under /srv (the default apps/<slug>: /srv/apps/<slug>)."""
    return f"/srv/{directory}" if user == "root" and not directory.startswith("/") else directory


ADDRESSES: dict[tuple[str, ...], str] = {}


def address(settings: Settings, host: str) -> str:
    """The address ssh connects to for HOST (`ssh -G`: its configuration, no connection),
    as make nginx-conf and the edge's upstream use it: where the proxy reaches the host."""
    argv = ["ssh", "-G", *(["-p", settings["SSH_PORT"]] if settings["SSH_PORT"] else []),
            *shlex.split(settings["SSH_OPTS"]), "--",
            f"{settings['REMOTE_USER']}@{host}" if settings["REMOTE_USER"] else host]
    if tuple(argv) not in ADDRESSES:
        try:
            said = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ShipError(message("no_address", host=host, why=exc), 1) from None
        found = [line.split(" ", 1)[1] for line in said.stdout.splitlines() if line.startswith("hostname ")]
        if said.returncode != 0 or not found:
            raise ShipError(message("no_address", host=host, why=said.stderr.strip()), 1)
        ADDRESSES[tuple(argv)] = found[0]
    return ADDRESSES[tuple(argv)]


def edge_words(settings: Settings, host: str) -> dict[str, str]:
    """Several hosts behind a [proxy] domain: the proxy host gets every host's gunicorn as it
    reaches it (its own on 127.0.0.1, the others at their addresses); each other host, the
    proxy host's name and its own address to bind. One host: nothing (the edge as before)."""
    proxy, port = settings.proxy_host, settings["PORT"]
    if not proxy:
        return {}
    if host != proxy:
        return {"EDGE_PROXY": proxy, "BIND_HOST": address(settings, host)}

    def where(name: str) -> str:
        found = address(settings, name)
        return f"[{found}]" if ":" in found else found
    return {"EDGE_UPSTREAMS": " ".join(f"127.0.0.1:{port}" if name == proxy else f"{where(name)}:{port}"
                                       for name in settings.hosts)}


class Remote:
    def __init__(self, settings: Settings, host: str, who: str, prefix: str = ""):
        self.settings, self.host, self.who, self.prefix = settings, host, who, prefix
        self.mux_dir: str | None = None
        self.dir = settings["REMOTE_DIR"]
        if not self.dir.startswith("/"):
            self.dir = app_dir(self.dir, login_user(settings, host))

    @property
    def target(self) -> str:
        user = self.settings["REMOTE_USER"]
        return f"{user}@{self.host}" if user else self.host

    # --- commands as data -----------------------------------------------------------------

    def options(self, port_flag: str = "-p") -> list[str]:
        """Host-key checking stays on: BatchMode only stops ssh from asking questions."""
        opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        if self.settings["SSH_PORT"]:
            opts += [port_flag, self.settings["SSH_PORT"]]
        if self.mux_dir:
            opts += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.mux_dir}/mux", "-o", "ControlPersist=120"]
        return opts + shlex.split(self.settings["SSH_OPTS"])

    def ssh(self, remote_command: str, *flags: str) -> list[str]:
        return ["ssh", *flags, *self.options(), "--", self.target, remote_command]

    def scp(self, local: Path, remote_name: str) -> list[str]:
        return ["scp", "-q", *self.options("-P"), "--", str(local), f"{self.target}:{self.dir}/.incoming/{remote_name}"]

    def host_env(self, report: bool, env: dict | None = None) -> str:
        words = {"APP_DIR": self.dir, "REMOTE_HOST": self.host, "DEPLOY_WHO": self.who}
        for name, host_name in HOST_VARIABLES.items():
            if self.settings[name]:
                words[host_name] = self.settings[name]
        if self.settings.hosts:  # several: the jobs run on one of them
            words["JOBS"] = "1" if self.host == self.settings.jobs_host else "0"
        words.update(edge_words(self.settings, self.host))
        words.update(env or {})
        if report:
            words["REPORT"] = "json"
        return " ".join(f"{name}={shlex.quote(value)}" for name, value in words.items())

    def line(self, command: str, args: tuple[str, ...], send: bool, report: bool, sha: str,
             env: dict | None = None) -> str:
        """The remote shell line that runs `remote.sh COMMAND ARGS`: with the host's copy
        when its sha256 is ours (else exit 86), or (send=True) with ours, read from stdin."""
        where = shlex.quote(f"{self.dir}/remote.sh")
        if send:
            incoming, tmp = shlex.quote(f"{self.dir}/.incoming"), shlex.quote(f"{self.dir}/.remote.sh.") + "$$"
            first = f"mkdir -p {incoming} && cat >{tmp} && mv -f {tmp} {where}"
        else:
            # 2>/dev/null first: the shell reports a missing file itself, before sha256sum runs.
            same = f'[ "$(sha256sum 2>/dev/null <{where})" = {shlex.quote(sha + "  -")} ]'
            first = "{ " + f"{same} || exit {SEND_HOST}; " + "}"  # (no double braces: a cookiecutter template)
        words = " ".join(shlex.quote(word) for word in (command, *args))
        return f"{first} && {self.host_env(report, env)} exec sh {where} {words}"

    # --- running them ---------------------------------------------------------------------

    def bundle_sha(self) -> str:
        return hashlib.sha256(self.settings.project.bundle.read_bytes()).hexdigest()

    def run(self, command: str, *args: str, report: bool = False, capture: bool = False,
            env: dict | None = None) -> Answer:
        """Run a host command, stdin closed; its output streams to ours (prefixed for several
        hosts) unless capture. Ours goes up first when the host's copy differs."""
        sha = self.bundle_sha()
        answer = self._run(self.ssh(self.line(command, args, False, report, sha, env)), report, capture,
                           subprocess.DEVNULL)
        if answer.status == SEND_HOST:
            with open(self.settings.project.bundle, "rb") as bundle:
                answer = self._run(self.ssh(self.line(command, args, True, report, sha, env)), report, capture,
                                   bundle)
        return answer

    def attached(self, command: str, *args: str, tty: bool = False, given: bytes | None = None) -> int:
        """Send the host program first if need be, then run COMMAND over a connection that
        carries our terminal (tty: for shell) or the bytes GIVEN on its stdin (config-set)."""
        sent = self.run("noop")
        if sent.status != 0:
            return sent.status
        argv = self.ssh(self.line(command, args, False, False, self.bundle_sha()), *(("-t",) if tty else ()))
        return subprocess.run(argv, input=given, check=False).returncode

    def _run(self, argv: list[str], report: bool, capture: bool, stdin) -> Answer:
        if not (report or capture or self.prefix):
            return Answer(subprocess.run(argv, stdin=stdin, check=False).returncode)
        # Several hosts: each line of a host's, errors too, prefixed with its name, in one stream.
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, text=True, bufsize=1,
                                stderr=subprocess.STDOUT if self.prefix else None)
        result, kept = {}, []
        for text in proc.stdout:
            if text.startswith(RESULT):
                result = json.loads(text[len(RESULT):])
            elif capture:
                kept.append(text)
            else:
                say(f"{self.prefix}{text.rstrip()}" if self.prefix else text.rstrip())
        return Answer(proc.wait(), result, "".join(kept))

    # --- asking without writing (make plan) ------------------------------------------------

    def probe_readonly(self) -> Answer:
        """The probe, from the bootstrap that we send on stdin (sh -s): nothing written there."""
        line = f"{self.host_env(False)} exec sh -s probe"
        with open(Path(__file__).resolve().parent.parent / "remote.sh", "rb") as bootstrap:
            return self._run(self.ssh(line), False, True, bootstrap)

    def run_in_memory(self, command: str) -> Answer:
        """A host command that writes nothing, run from our bundle on stdin, held in a memfd
        (Linux): the host's own copy, whatever it is, stays as it is."""
        python = self.settings["HOST_PYTHON"] or "python3"
        line = f"{self.host_env(False)} exec {shlex.quote(python)} -S -c {shlex.quote(IN_MEMORY)} {shlex.quote(command)}"
        with open(self.settings.project.bundle, "rb") as bundle:
            return self._run(self.ssh(line), False, True, bundle)

    def upload(self, tarball: Path, name: str) -> None:
        if subprocess.run(self.scp(tarball, name), stdin=subprocess.DEVNULL, check=False).returncode != 0:
            raise ShipError(message("upload_failed", target=self.target), 1)

    # --- the shared connection ------------------------------------------------------------

    def __enter__(self):
        self.mux_dir = tempfile.mkdtemp(prefix="ssh-")  # 0700: no other account can bind its socket
        return self

    def __exit__(self, *exc: object) -> None:
        if self.mux_dir:
            subprocess.run(["ssh", *self.options(), "-O", "exit", "--", self.target], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            shutil.rmtree(self.mux_dir, ignore_errors=True)
            self.mux_dir = None


_said = threading.Lock()  # several hosts' lines never mix within a line


def say(text: str = "", err: bool = False) -> None:
    with _said:
        print(text, file=sys.stderr if err else sys.stdout, flush=True)


def deploy_who() -> str:
    """Who deploys, for the lock and the history: user@machine, odd characters made _."""
    raw = f"{os.environ.get('USER') or pwd.getpwuid(os.getuid()).pw_name}@{os.uname().nodename}"
    return "".join(c if c.isalnum() and c.isascii() or c in "@._-" else "_" for c in raw)
