#!/usr/bin/env python3
"""Measure the template end to end on this machine and print ONE markdown table.

    python bench/run.py            # from the repository root (or: make bench)

Bakes the default answers into a temporary directory, times make test / pack, deploys to
a private sshd on 127.0.0.1 (tests/harness/sshd.py), drives the hand-over load with
tests/harness/load.py and measures requests/s with wrk (127.0.0.1 only), draws the hand-over
picture (bench/handover.png, matplotlib), and cleans up everything it started: gunicorn
masters, its sshd, the temp dir. Every figure in the table, and the floor it is set against,
is measured in this run. Progress goes to stderr. bench/README.md says what each row means.
"""

from __future__ import annotations

import http.client
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test harness: tests/harness/

from harness.app import healthz  # noqa: E402
from harness.load import Load  # noqa: E402
from harness.sshd import PrivateSshd, find_sshd, free_port  # noqa: E402

import installs  # noqa: E402  (bench/installs.py, next to this file)
import traffic  # noqa: E402  (bench/traffic.py)
from plot import Timeline, draw  # noqa: E402  (bench/plot.py, next to this file)

# What it runs keeps its compiled modules, as on a developer's machine (tests/conftest.py).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

THREADS = 8  # hand-over load: tests/harness/load.py threads, a new connection per request
STEADY_SECONDS = 2.0  # load before the first command: the steady state each scenario is set against
WRK_SECONDS = 5  # each wrk run
WRK_ROUNDS = 3  # rounds over every setting with `Connection: close`, every other one in reverse order
WRK = ["wrk", "-t2", "-c32", "--timeout", "5s", "--latency"]
PICTURE = Path(__file__).resolve().parent / "handover.png"
Row = tuple[str, str, str]
rows: list[Row] = []


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def row(what: str, figure: str, note: str = "") -> None:
    rows.append((what, figure, note))
    say(f"{what}: {figure} {note}".rstrip())


def run(command: list[str], cwd: Path, **kwargs) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run and time a command; stop the bench with its output if it fails."""
    started = time.monotonic()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)
    took = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return took, result


def secs(seconds: float) -> str:
    return f"{seconds:.2f} s"


def cookiecutter() -> list[str]:
    venv = ROOT / ".venv" / "bin" / "cookiecutter"
    return [str(venv)] if venv.exists() else [sys.executable, "-m", "cookiecutter"]


class Project:
    def __init__(self, path: Path, variables: dict[str, str]) -> None:
        self.path = path
        self.variables = variables
        self.package = next(path.glob("src/*/wsgi.py")).parent.name

    def make(self, *targets: str, remote: bool = False) -> tuple[float, str]:
        extra = [f"{k}={v}" for k, v in self.variables.items()] if remote else []
        took, result = run(["make", "--no-print-directory", *targets, *extra], self.path)
        return took, result.stdout + result.stderr


    def make_timed(self, target: str, t0: float) -> tuple[float, float, list[tuple[str, float, float]], str]:
        """`make TARGET` on the host, its output read line by line as it comes: each step line
        (`  install: 1.834s`) is timed when it arrives, as (name, started, ended). Returns the
        command's start and end, its steps and its output, in seconds since t0."""
        command = ["make", "--no-print-directory", target, *(f"{k}={v}" for k, v in self.variables.items())]
        started = time.monotonic()
        proc = subprocess.Popen(command, cwd=self.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, bufsize=1)
        watchdog = threading.Timer(600, proc.kill)  # bounded, even if the host hangs
        watchdog.start()
        lines, steps = [], []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                now = time.monotonic()
                lines.append(line)
                if match := STEP_LINE.match(line):
                    took = float(match[2]) / (1000 if match[3] == "ms" else 1)
                    steps.append((match[1], now - took - t0, now - t0))
            code = proc.wait()
        finally:
            watchdog.cancel()
        ended = time.monotonic()
        if code != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({code}):\n{''.join(lines)}")
        return started - t0, ended - t0, steps, "".join(lines)


STEP_LINE = re.compile(r"^\s+([a-z_-]+): ([\d.]+)(ms|s)\s*$")


def parse_ms(output: str, step: str) -> float:
    """Seconds from a `  <step>: 123ms` (Makefile) or `  <step>: 1.234s` (remote.sh) line."""
    match = re.search(rf"^\s*{step}: ([\d.]+)(ms|s)\s*$", output, re.M)
    if not match:
        raise RuntimeError(f"no '{step}:' line in the output:\n{output}")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def against(figure: float, floor: float, what: str = "its floor") -> str:
    """`2.31× its floor (1.02 s)`: a figure set against its floor, both from this run."""
    return f"{figure / floor:.2f}× {what} ({secs(floor)})" if floor > 0 else f"{what} is 0"


# --- floors: the least each step can cost on this machine, measured in this run ------------


class Floors:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.notes: dict[str, str] = {}

    def __getitem__(self, name: str) -> float:
        return self.values[name]


floors = Floors()


def second_app_row(project: Project, work: Path) -> None:
    """A first deploy of the same project into another REMOTE_DIR of the host: another app
    or stage, which links what the first one installed from the host's store."""
    other = Project(project.path, {**project.variables, "REMOTE_DIR": str(work / "host" / "second-app"),
                                   "PORT": str(free_port())})
    try:
        _, out = other.make("deploy", remote=True)
        took = parse_ms(out, "install")
        row("first deploy of a second app on the host: install step", secs(took),
            f"target ≤ {secs(installs.TARGET_FIRST)} for a first deploy: "
            f"{'met' if took <= installs.TARGET_FIRST else 'NOT met'} ({installs.install_line(out)})")
    finally:
        other.make("stop", remote=True)


def measure_install_floor(host: PrivateSshd, work: Path, release: Path) -> None:
    floors.values["install"], floors.notes["install"] = installs.install_floor(host, work, release)


def measure_upload_floor(host: PrivateSshd, work: Path, tarball: Path) -> None:
    """One scp of the same tarball to the host (one connection, as the deploy's upload is)."""
    took, _ = run(["scp", "-q", *shlex.split(host.ssh_opts), str(tarball), f"{host.host_alias}:{work}/floor-upload.tar.gz"],
                  work, timeout=120)
    (work / "floor-upload.tar.gz").unlink(missing_ok=True)
    floors.values["upload"] = took


def deploy_row(label: str, total: float, out: str) -> None:
    host = parse_ms(out, "host")
    install = parse_ms(out, "install")
    found = {m.group(1): float(m.group(2)) for m in
             re.finditer(r"^\s*(local|pack|install|smoke_boot|release_command|smoke_paths|switch|handover|prune): ([\d.]+)s\s*$",
                          out, re.M)}
    steps = ", ".join(f"{name} {value:.2f}" for name, value in found.items())
    floor = floors["test"] + floors["wheel"] + floors["upload"] + floors["install"]
    row(f"{label}: total", secs(total),
        f"{against(total, floor)}: pytest alone + the wheel alone + scp of the tarball + the install floor; "
        f"local {secs(total - host)}, host {secs(host)} (steps in s: {steps})")
    row(f"{label}: host `install:` step", secs(install),
        f"{against(install, floors['install'])}: {floors.notes['install']}")
    if "local" in found:
        row(f"{label}: local side (test and pack)", secs(found["local"]),
            against(found["local"], floors["make test"], "`make test` alone"))
    if "smoke_boot" in found:
        # The floor of the host side: one app boot for the smoke test and one for the new
        # master; the smoke boot step measures one boot in this very deploy.
        boots = 2 * found["smoke_boot"]
        migrate = found.get("release_command", 0.0)
        row(f"{label}: host side", secs(host),
            f"{against(host, boots, 'two app boots')}; without the release command's "
            f"{secs(migrate)} (migrations, not part of that floor): {against(host - migrate, boots, 'two app boots')}")


def upload_row(path: Path, alias: str) -> None:
    """What the last deploy sent (the lean tarball), against the app's own wheel: the least
    a release with new code can carry."""
    sent = (path / "build" / "hosts" / f"{alias}.upload.tar.gz").stat().st_size
    wheel = next((path / "dist").glob("*.whl")).stat().st_size
    full = next((path / "build").glob("*.tar.gz")).stat().st_size
    row("redeploy, unchanged dependencies: upload", f"{sent / 1024:.0f} KiB",
        f"{sent / wheel:.2f}× the app's wheel alone ({wheel / 1024:.0f} KiB), the floor; the whole release is "
        f"{full / 1024:.0f} KiB (the host's wheel cache holds the rest)")


# --- the hand-over under load -------------------------------------------------------------------


class TimedLoad(Load):
    """tests/harness/load.py's Load that also keeps every request as (began, ended, ok), for
    the picture. Its request and bookkeeping are Load._one's, with the times kept."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[tuple[float, float, bool]] = []

    def _one(self) -> None:
        began = time.monotonic()
        error: str | None = None
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            conn.request("GET", self.path, headers={"Connection": "close"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                error = f"HTTP {response.status}"
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        ended = time.monotonic()
        with self._lock:
            self.requests.append((began, ended, error is None))
            self.latencies.append(ended - began)
            if error is None:
                self.ok += 1
                self.longest_gap = max(self.longest_gap, ended - self._last_ok)
                self._last_ok = ended
            else:
                self.failed += 1
                if len(self.failures) < 100:
                    self.failures.append((round(began - self.started, 3), error))


def longest_gap(requests: list[tuple[float, float, bool]], start: float, end: float) -> float:
    """The longest time in [start, end] with no request succeeding."""
    last, gap = start, 0.0
    for _, ended, ok in sorted(requests, key=lambda r: r[1]):
        if ok and start <= ended <= end:
            gap, last = max(gap, ended - last), ended
    return max(gap, end - last)


def scenario(project: Project, port: int, title: str, targets: list[str]) -> Timeline:
    """Run TARGETS one after the other under the load, STEADY_SECONDS after it started, and
    add a row: failures, and the worst latency and longest gap set against the steady state
    before the first command (same load, same run)."""
    with TimedLoad(port, threads=THREADS, max_seconds=300) as load:
        load.wait_for(ok=50)
        time.sleep(STEADY_SECONDS)
        t0 = time.monotonic()
        steps: list[tuple[str, float, float]] = []
        for target in targets:
            started, ended, lines, _ = project.make_timed(target, t0)
            named = [s for s in lines if s[0] != "host"]
            if target == "deploy":  # the upload (scp + lock) is the host time before install
                host = next(s for s in lines if s[0] == "host")
                install = next(s for s in lines if s[0] == "install")
                named.insert(next(i for i, s in enumerate(named) if s[0] == "install"), ("upload", host[1], install[1]))
            steps += named or [(f"make {target}", started, ended)]
        time.sleep(1)
    with load._lock:
        requests = [(b - t0, e - t0, ok) for b, e, ok in load.requests]
    steady = [r for r in requests if r[1] < 0]
    steady_worst = max((e - b for b, e, _ in steady), default=0.0)
    steady_gap = longest_gap(steady, min(b for b, _, _ in requests), 0.0)
    worst = max(e - b for b, e, _ in requests)
    gap = longest_gap(requests, min(b for b, _, _ in requests), max(e for _, e, _ in requests))
    row(title, f"{load.failed} failed / {load.total}",
        f"floor: 0 failed; worst latency {worst * 1000:.0f} ms = {worst / steady_worst:.1f}× the steady state's "
        f"{steady_worst * 1000:.0f} ms (same load, the {STEADY_SECONDS:.0f} s before the first command); longest gap "
        f"without an answer {gap * 1000:.0f} ms = {gap / steady_gap:.1f}× steady {steady_gap * 1000:.0f} ms; "
        f"{load.duration:.1f} s, {load.total / load.duration:.0f} requests/s")
    return Timeline(title, requests, steps)


def handover_rows(project: Project, port: int) -> list[Timeline]:
    return [scenario(project, port, "redeploy under load (USR2 hand-over)", ["deploy"]),
            scenario(project, port, "`make stop && make start` under load", ["stop", "start"])]


# --- requests/s with wrk -------------------------------------------------------------------------


def wrk(port: int, close: bool) -> dict[str, float]:
    """One wrk run on `/` (renders the template): requests/s, p50/p90/p99 in ms, errors."""
    command = [*WRK, f"-d{WRK_SECONDS}s", *(["-H", "Connection: close"] if close else []),
               f"http://127.0.0.1:{port}/"]
    result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            timeout=WRK_SECONDS + 30)
    text = result.stdout
    found = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if result.returncode != 0 or not found:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{text}\n{result.stderr}")
    figures = {"rps": float(found[1])}
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    for pct, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        figures[f"p{pct}"] = float(value) * scale[unit]
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    figures["errors"] = (sum(int(x) for x in socket_errors.groups()) if socket_errors else 0) + \
        (int(non_2xx[1]) if non_2xx else 0)
    return figures


# (label, gunicorn arguments): None is the deployed app itself, [] gunicorn's defaults; the
# others run the release's own deploy/gunicorn.conf.py (access log on, like the deployed
# app) with only workers, threads and worker class changed on the command line.
SETTINGS: list[tuple[str, list[str] | None]] = [
    ("deployed: prod.ini, workers=2, threads=4 (gthread)", None),
    ("`gunicorn <pkg>.wsgi:app` defaults: 1 sync worker, no access log", []),
    ("workers=3, sync", ["--workers", "3", "--threads", "1", "--worker-class", "sync"]),
    ("workers=4, sync", ["--workers", "4", "--threads", "1", "--worker-class", "sync"]),
    ("workers=2, threads=2 (gthread)", ["--workers", "2", "--threads", "2", "--worker-class", "gthread"]),
]


def start_gunicorn(project: Project, remote_dir: Path, args: list[str], name: str) -> tuple[subprocess.Popen[bytes], int]:
    release = Path(os.path.realpath(remote_dir / "current"))
    prefix = project.package.upper()
    shared = remote_dir / "shared"
    env = {**os.environ, f"{prefix}_ENV": "prod", f"{prefix}_SHARED_DIR": str(shared),
           f"{prefix}_CURRENT": str(remote_dir / "current"), f"{prefix}_LOCAL_CONFIG": str(shared / "local.ini"),
           f"{prefix}_FOREGROUND": "1"}
    port = free_port()
    logs = remote_dir.parent / "settings"
    logs.mkdir(exist_ok=True)
    if args:  # the deployed configuration, its own pidfile and logs, in the foreground
        command = ["-c", "deploy/gunicorn.conf.py", "--pid", str(logs / f"{name}.pid"),
                   "--error-logfile", str(logs / f"{name}.log"), "--access-logfile", str(logs / f"{name}.access.log"), *args]
    else:  # gunicorn's defaults; --no-control-socket only keeps it off the per-user control socket
        command = ["--no-control-socket", f"{project.package}.wsgi:app"]
    log = open(logs / f"{name}.out", "wb")
    proc = subprocess.Popen([str(release / "venv/bin/gunicorn"), "--bind", f"127.0.0.1:{port}", *command],
                            cwd=release, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 60
    while healthz(port, timeout=2, check=False) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn {' '.join(command)} did not start: see {logs}/{name}.*")
        time.sleep(0.1)
    return proc, port


def stop_gunicorn(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def throughput_rows(project: Project, port: int, remote_dir: Path) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    try:
        for i, (_, args) in enumerate(SETTINGS):
            if args is None:
                ports.append(port)
            else:
                proc, other = start_gunicorn(project, remote_dir, args, f"setting{i}")
                procs.append(proc)
                ports.append(other)
        order = list(range(len(SETTINGS)))
        close: list[list[dict[str, float]]] = [[] for _ in SETTINGS]
        for round_ in range(WRK_ROUNDS):
            for i in (order if round_ % 2 == 0 else order[::-1]):  # drift in the machine's load evens out
                say(f"wrk round {round_ + 1}: {SETTINGS[i][0]}")
                close[i].append(wrk(ports[i], close=True))
        keep = [wrk(p, close=False) for p in ports]
    finally:
        for proc in procs:
            stop_gunicorn(proc)

    def mean(runs: list[dict[str, float]], key: str) -> float:
        return sum(r[key] for r in runs) / len(runs)

    def short(i: int) -> str:
        return SETTINGS[i][0].split(":")[0]  # "deployed", "`gunicorn <pkg>.wsgi:app` defaults", "workers=…"

    defaults = mean(close[1], "rps")
    for i, (label, _) in enumerate(SETTINGS):
        runs = close[i]
        rps = mean(runs, "rps")
        versus = "the reference" if i == 1 else f"{rps / defaults:.2f}× the defaults"
        rounds = ", ".join(f"{r['rps']:.0f}" for r in runs)
        row(f"requests/s on `/`: {label}", f"{rps:.0f}/s",
            f"{versus}; rounds {rounds}; latency p50 {mean(runs, 'p50'):.1f}, p90 {mean(runs, 'p90'):.1f}, "
            f"p99 {mean(runs, 'p99'):.1f} ms; keep-alive {keep[i]['rps']:.0f}/s (p99 {keep[i]['p99']:.1f} ms); "
            f"errors {sum(int(r['errors']) for r in [*runs, keep[i]])}")
    ranked = sorted(range(len(SETTINGS)), key=lambda i: mean(close[i], "rps"), reverse=True)
    best, second = ranked[0], ranked[1]
    spread = max((max(r["rps"] for r in runs) - min(r["rps"] for r in runs)) / mean(runs, "rps") for runs in close)
    keep_best = max(range(len(SETTINGS)), key=lambda i: keep[i]["rps"])
    row("requests/s: the fastest setting", short(best),
        f"{mean(close[best], 'rps') / mean(close[second], 'rps') - 1:+.0%} over the next ({short(second)}), "
        f"{mean(close[best], 'rps') / mean(close[0], 'rps') - 1:+.0%} over the deployed settings; the rounds of one "
        f"setting differ by up to {spread:.0%}. With keep-alive: {short(keep_best)} ({keep[keep_best]['rps']:.0f}/s, "
        f"{keep[keep_best]['rps'] / keep[0]['rps'] - 1:+.0%} over the deployed settings)")


def smoke_seconds(out: str) -> float:
    return sum(float(m[1]) for m in re.finditer(r"^\s*smoke_(?:boot|paths): ([\d.]+)s\s*$", out, re.M))


def smoke_row(project: Project, out: str) -> None:
    """The smoke test with [deploy] smoke_paths at its default (/), against /healthz alone:
    a redeploy with smoke_paths emptied in prod.ini, in this run."""
    prod = project.path / "config" / "prod.ini"
    saved = prod.read_text()
    prod.write_text(saved + "\n[deploy]\nsmoke_paths =\n")
    try:
        _, alone = project.make("deploy", remote=True)
    finally:
        prod.write_text(saved)
    row("redeploy: smoke boot and smoke_paths (default /)", secs(smoke_seconds(out)),
        against(smoke_seconds(out), smoke_seconds(alone), "the smoke boot with /healthz alone (smoke_paths empty)"))


def main() -> int:
    if find_sshd() is None:
        print("bench: needs sshd (apt-get install openssh-server)", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("bench: needs wrk to measure requests/s: apt-get install wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="flask-deploy-bench-")).resolve()
    host: PrivateSshd | None = None
    project: Project | None = None
    started = time.monotonic()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    row("date (UTC)", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"))
    row("machine", f"{platform.machine()}, {cpus} CPUs",
        f"{platform.system()} {platform.release()}, python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f} at start")
    try:
        took, _ = run([*cookiecutter(), "--no-input", "-o", str(work / "bake"), str(ROOT)], ROOT)
        floor, _ = run([*cookiecutter(), "--version"], ROOT)
        row("bake (cookiecutter --no-input)", secs(took), f"{against(took, floor)}: `cookiecutter --version`, the tool's start")
        path = next((work / "bake").iterdir())
        subprocess.run(["git", "init", "-q"], cwd=path, check=True)
        remote_dir = work / "host" / "app"
        port = free_port()
        host = PrivateSshd(work / "sshd").start()
        project = Project(path, {"REMOTE_HOST": host.host_alias, "SSH_OPTS": host.ssh_opts,
                                 "PORT": str(port), "REMOTE_DIR": str(remote_dir)})

        took, _ = project.make("venv")
        floor, _ = run(["python3", "-m", "venv", str(work / "floor-venv")], work)
        shutil.rmtree(work / "floor-venv")
        row("`make venv` (cold, once per project)", secs(took),
            f"{against(took, floor)}: `python3 -m venv` alone; the rest is pip install of requirements-dev.txt")
        project.make("test")
        took, _ = project.make("test")
        floors.values["make test"] = took  # the local side of a deploy is set against it
        floors.values["test"], _ = run([str(path / ".venv/bin/python"), "-m", "pytest", "-q"], path)
        row("`make test` (warm)", secs(took), f"{against(took, floors['test'])}: pytest alone; "
            "`make test` adds check-config for every env")
        took, _ = project.make("pack")
        tarball = next((path / "build").glob("*.tar.gz"))
        floors.values["wheel"], _ = run([str(path / ".venv/bin/python"), "-m", "build", "--wheel", "--no-isolation",
                                         "--outdir", str(work / "floor-dist"), "."], path)
        row("`make pack` (first: downloads the wheelhouse)", secs(took), f"{against(took, floors['wheel'])}: "
            "`python -m build --wheel` of the app alone")
        took, _ = project.make("pack")
        row("`make pack` (again: wheelhouse cached)", secs(took), f"{against(took, floors['wheel'])}; "
            f"tarball {tarball.stat().st_size / 1024:.0f} KiB, {tarball.name}")

        # a fresh host: this account's store of installed wheels emptied (a cache, it loses nothing)
        shutil.rmtree(Path.home() / ".cache" / "cookiecutter-flask-deploy", ignore_errors=True)
        took, out = project.make("deploy", remote=True)
        measure_install_floor(host, work, Path(os.path.realpath(remote_dir / "current")))
        measure_upload_floor(host, work, next((path / "build").glob("*.tar.gz")))
        deploy_row("first deploy", took, out)
        first = parse_ms(out, "install")
        row("first deploy: install step against its target", secs(first),
            f"target ≤ {secs(installs.TARGET_FIRST)}: {'met' if first <= installs.TARGET_FIRST else 'NOT met'} "
            f"({installs.install_line(out)})")
        second_app_row(project, work)
        took, out = project.make("deploy", remote=True)
        deploy_row("redeploy, unchanged dependencies", took, out)
        smoke_row(project, out)
        upload_row(path, host.host_alias)
        unchanged = parse_ms(out, "install")
        with installs.changed_dependencies(path):
            took, out = project.make("deploy", remote=True)
        changed = parse_ms(out, "install")
        unchanged_what = "the unchanged redeploy's install step"
        sent = (path / "build" / "hosts" / f"{host.host_alias}.upload.tar.gz").stat().st_size
        row("redeploy, one added and one changed dependency: host `install:` step", secs(changed),
            f"{against(changed, unchanged, unchanged_what)}, target ≤ "
            f"{installs.TARGET_RATIO:.0f}×: {'met' if changed <= installs.TARGET_RATIO * unchanged else 'NOT met'} "
            f"({installs.ADDED} added, {'=='.join(installs.CHANGED)}; {installs.install_line(out)}; "
            f"upload {sent / 1024:.0f} KiB)")
        timelines = handover_rows(project, port)
        throughput_rows(project, port, remote_dir)
        traffic.traffic_rows(path, work, row)
    finally:
        if project is not None and host is not None:
            try:
                project.make("stop", remote=True)
            except (RuntimeError, subprocess.SubprocessError) as exc:
                say(f"make stop failed: {exc}")
        if host is not None:
            host.stop()
        shutil.rmtree(work, ignore_errors=True)
    draw(timelines, PICTURE, f"{THREADS} client threads on /healthz, a new connection per request; "
         f"{platform.machine()}, {cpus} CPUs shared by client, server and make; "
         f"{datetime.now(timezone.utc).strftime('%Y-%m-%d')}")
    row("hand-over picture", PICTURE.relative_to(ROOT).as_posix(), "answered / failed per 100 ms and worst latency, "
        "with the steps marked")
    row("bench run time", secs(time.monotonic() - started), f"load average {os.getloadavg()[0]:.2f} at end")

    print("| what | figure | notes |")
    print("|---|---|---|")
    for what, figure, note in rows:
        print(f"| {what} | {figure} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
