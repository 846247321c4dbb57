"""The deploying machine's own steps: the probe's facts and target, test and pack side by
side, the lean upload, the post-deploy hook, and the timing lines every step prints."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import target as targets  # deploy/target.py
from ship import tested
from ship.messages import ShipError, message
from ship.remote import Remote, say
from ship.settings import Settings

HOOK = Path("deploy/hooks/post-deploy")
PACKED = Path("build/hosts/packed.txt")  # target, tarball: what `make pack` packed for the hosts
LEAN_AGAIN = 75  # the host lacks a wheel the lean upload left out: send the whole release


def took(started: float) -> str:
    """Seconds since STARTED (time.monotonic()), as every step prints them: 1.234s."""
    return f"{time.monotonic() - started:.3f}s"


def facts_file(host: str) -> Path:
    return Path("build/hosts") / (host.replace("/", "_") + ".facts")


def reach(remote: Remote, minimum: str) -> dict:
    """Ask the host what it runs (the probe writes nothing there), and refuse in one sentence
    a host that cannot take a release. Returns the facts, with the host's target."""
    answer = remote.run("probe", capture=True)
    if answer.status != 0:
        raise ShipError(message("unreachable", target=remote.target) if answer.status == 255 else "", 1)
    try:  # its one JSON line; with several hosts ssh's own warnings (stderr) come in the same stream
        facts = json.loads(next((line for line in reversed(answer.output.splitlines()) if line.startswith("{")), ""))
    except ValueError:
        raise ShipError(f"{remote.host} answered the probe with no facts: {answer.output.strip()[-200:]!r}", 1) from None
    try:
        facts["target"] = targets.host_target(facts, remote.host, minimum)
    except targets.TargetError as exc:
        raise ShipError(str(exc), 2) from None
    path = facts_file(remote.host)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(facts))
    return facts


def make(settings: Settings, *args: str, quiet: bool = False) -> int:
    """`make ARGS` here; quiet: its output is shown only when it fails."""
    command = [settings.project.make, "-s", "--no-print-directory", *args]
    if not quiet:
        return subprocess.run(command, stdin=subprocess.DEVNULL, check=False).returncode
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        say(done.stdout.rstrip(), err=True)
        say(done.stderr.rstrip(), err=True)
    return done.returncode


def pack(settings: Settings, wanted: list[str]) -> dict[str, Path]:
    """`make pack` for every target wanted, once each: {target: tarball}."""
    code = make(settings, "pack", f"PACK_TARGET={' '.join(sorted(set(wanted)))}", f"PACKED={PACKED}", quiet=True)
    if code != 0:
        raise ShipError(message("local_failed", step="pack"), 1)
    packed = dict(line.split(" ", 1) for line in PACKED.read_text().splitlines())
    return {t: Path(packed[t]) for t in wanted}


def test_and_pack(settings: Settings, wanted: list[str], with_tests: bool = True, then=None) -> dict[str, Path]:
    """make test (every config, then the tests) and the pack, side by side: they do not
    depend on each other, and together take about what the tests do. The venv first: both
    would otherwise run pip in it at once after a requirements change. THEN(packed), if
    given, runs after the pack, while the tests may still run."""
    started = time.monotonic()
    if make(settings, "venv") != 0:
        raise ShipError(message("local_failed", step="venv"), 1)
    tests = {}
    thread = None
    key = tested.tree_key() if with_tests else None
    if with_tests and tested.passed_already(key):
        say("  test: passed already for this tree (build/tested; make test runs them again)")
        with_tests = False
    if with_tests:
        def run_tests() -> None:
            tested = time.monotonic()
            tests["code"] = make(settings, "test")
            tests["took"] = took(tested)
        thread = threading.Thread(target=run_tests)
        thread.start()
    try:
        packing = time.monotonic()
        packed = pack(settings, wanted)
        releases = len(set(packed.values()))
        say(f"  pack: {took(packing)}" + (f" ({releases} release(s) for {len(packed)} target(s))"
                                          if len(set(wanted)) > 1 or settings.hosts else ""))
        if then is not None:
            then(packed)
    finally:
        if thread:
            thread.join()
    if with_tests:
        if tests["code"] != 0:
            raise ShipError(message("local_failed", step="test"), 1)
        tested.record(key)
        say(f"  test: {tests['took']}")
    say(f"  local: {took(started)}")
    return packed


def upload_name(settings: Settings) -> str:
    return (f"{settings.project.name}-{settings.project.version}-"
            f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}.tar.gz")


def lean_command(release: Path, host: str) -> tuple[list[str], Path]:
    """deploy/pack.py lean: the release minus the wheels the host's cache holds; and its output."""
    out = facts_file(host).with_suffix(".upload.tar.gz")
    return [str(Path(".venv/bin/python")), "deploy/pack.py", "lean", str(release), str(facts_file(host)), str(out)], out


def lean(settings: Settings, release: Path, host: str) -> Path:
    command, out = lean_command(release, host)
    done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise ShipError("", done.returncode)
    return out


def lean_all(releases: dict[str, Path]) -> dict[str, Path | None]:
    """Each host's lean upload ({host: its release}), side by side, while the tests run: {host:
    the upload, or None where it failed (send_release makes it again, and says why)}."""
    made: dict[str, Path | None] = {}
    running = {}
    for host, release in releases.items():
        command, made[host] = lean_command(release, host)
        try:
            running[host] = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL)
        except OSError:
            made[host] = None
    for host, proc in running.items():
        if proc.wait() != 0:
            made[host] = None
    return made


def send_release(settings: Settings, remote: Remote, release: Path, command: str, env: dict | None = None,
                 leaned: Path | None = None):
    """Upload the lean release (LEANED, when lean_all made it) and run `COMMAND NAME SHA256`
    on the host; when a cached wheel is gone or bad there (75), the whole release goes up
    instead. Returns the host's Answer."""
    if not release.is_file():
        raise ShipError(message("no_release_file", release=release), 2)
    for tarball in (leaned or lean(settings, release, remote.host), release):
        name = upload_name(settings)
        remote.upload(tarball, name)
        answer = remote.run(command, name, hashlib.sha256(tarball.read_bytes()).hexdigest(), report=True, env=env)
        if answer.status != LEAN_AGAIN:
            return answer
    return answer


def post_deploy(settings: Settings, goal: str, releases: list[str], hosts: list[str], status: int) -> None:
    """deploy/hooks/post-deploy, when there and executable, once after every deploy and
    rollback, ok or not. Its failure is reported; the deploy's own result stands."""
    if settings["NO_POST_DEPLOY"] or not (HOOK.is_file() and os.access(HOOK, os.X_OK)):
        return
    env = {**os.environ, "RELEASE": " ".join(sorted(set(releases) - {"?", "none"})),
           "RESULT": "ok" if status == 0 else "failed", "HOSTS": " ".join(hosts), "APP_ENV": settings.env}
    code = subprocess.run([str(HOOK)], env=env, stdin=subprocess.DEVNULL, check=False).returncode
    if code != 0:
        say(message("hook_failed", status=code, what=goal), err=True)
