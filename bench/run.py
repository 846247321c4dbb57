#!/usr/bin/env python3
"""Measure the template end to end on this machine and print ONE markdown table.

    python bench/run.py            # from the repository root (or: make bench)

Bakes the default answers into a temporary directory, times make test / pack, deploys to
a private sshd on 127.0.0.1 (tests/harness/sshd.py), drives load with tests/harness/load.py
(127.0.0.1 only), and cleans up everything it started: gunicorn masters, its sshd, the temp dir.
Every figure in the table is measured in this run. Progress goes to stderr.
bench/README.md says what each row means.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test harness: tests/harness/

from harness.app import healthz  # noqa: E402
from harness.load import Load  # noqa: E402
from harness.sshd import PrivateSshd, find_sshd, free_port  # noqa: E402

THREADS = 8
RPS_SECONDS = 10.0
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


def parse_ms(output: str, step: str) -> float:
    """Seconds from a `  <step>: 123ms` (Makefile) or `  <step>: 1.234s` (remote.sh) line."""
    match = re.search(rf"^\s*{step}: ([\d.]+)(ms|s)\s*$", output, re.M)
    if not match:
        raise RuntimeError(f"no '{step}:' line in the output:\n{output}")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def deploy_rows(project: Project, label: str) -> None:
    total, out = project.make("deploy", remote=True)
    host = parse_ms(out, "host")
    install = parse_ms(out, "install")
    steps = ", ".join(f"{m.group(1)} {float(m.group(2)):.2f} s" for m in
                      re.finditer(r"^\s*(smoke_boot|switch|handover|prune): ([\d.]+)s\s*$", out, re.M))
    row(f"{label}: total (local + host)", secs(total),
        f"local {secs(total - host)}, host {secs(host)} (install {secs(install)}, {steps})")
    row(f"{label}: host `install:` step", secs(install),
        "verify + unpack + venv + offline pip install of the release's wheels")


def floor_row(host: PrivateSshd, work: Path, release: Path, project: Project) -> None:
    """python3 -m venv + pip install --no-index of the same wheels, on the host, timed there."""
    version = (release / "RELEASE").read_text().split("version=")[1].split()[0]
    dist = (release / "RELEASE").read_text().split("name=")[1].split()[0]
    script = (f"set -e; d=$(mktemp -d {work}/floor.XXXXXX); cd $d; s=$(date +%s%N); python3 -m venv venv; "
              f"m=$(date +%s%N); venv/bin/pip install -q --disable-pip-version-check --no-index "
              f"--find-links {release}/wheels {dist}=={version} >/dev/null 2>&1; e=$(date +%s%N); "
              f"rm -rf $d; echo $s $m $e")
    result = host.run(script, check=True, timeout=300)
    start, mid, end = (int(x) for x in result.stdout.split())
    row("floor: `python3 -m venv` + offline `pip install` (same wheels, same host)", secs((end - start) / 1e9),
        f"venv {secs((mid - start) / 1e9)}, pip {secs((end - mid) / 1e9)}")


def handover_rows(project: Project, port: int) -> None:
    with Load(port, threads=THREADS, max_seconds=300) as load:
        load.wait_for(ok=50)
        project.make("deploy", remote=True)
        time.sleep(1)
    row("redeploy under load (USR2 hand-over)", f"{load.failed} failed / {load.total}",
        f"worst latency {load.worst_latency * 1000:.0f} ms, longest gap without an answer "
        f"{load.longest_gap * 1000:.0f} ms, {load.duration:.1f} s")
    with Load(port, threads=THREADS, max_seconds=300) as load:
        load.wait_for(ok=50)
        project.make("stop", remote=True)
        project.make("start", remote=True)
        time.sleep(1)
    row("`make stop && make start` under load", f"{load.failed} failed / {load.total}",
        f"worst latency {load.worst_latency * 1000:.0f} ms, longest gap without an answer "
        f"{load.longest_gap * 1000:.0f} ms, {load.duration:.1f} s")


def rps(port: int) -> Load:
    load = Load(port, threads=THREADS, path="/", max_seconds=RPS_SECONDS).start()
    load.wait()
    return load


def throughput_rows(project: Project, port: int, remote_dir: Path) -> None:
    deployed = rps(port)
    row("requests/s on `/`: deployed settings", f"{deployed.rps:.0f}/s",
        f"{deployed.failed} failed, worst {deployed.worst_latency * 1000:.0f} ms "
        f"(prod.ini: workers=2, threads=2 (gthread), access log on)")
    release = Path(os.path.realpath(remote_dir / "current"))
    prefix = project.package.upper()
    shared = remote_dir / "shared"
    env = {**os.environ, f"{prefix}_ENV": "prod", f"{prefix}_SHARED_DIR": str(shared),
           f"{prefix}_CURRENT": str(remote_dir / "current"), f"{prefix}_LOCAL_CONFIG": str(shared / "local.ini")}
    other = free_port()
    log = open(remote_dir.parent / "defaults.log", "wb")
    # gunicorn's defaults (1 sync worker); --no-control-socket only keeps it off the
    # per-user control socket another gunicorn on this machine may hold.
    proc = subprocess.Popen([str(release / "venv/bin/gunicorn"), "--bind", f"127.0.0.1:{other}",
                             "--no-control-socket", f"{project.package}.wsgi:app"],
                            cwd=release, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while healthz(other, timeout=2, check=False) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn with its defaults did not start: see {log.name}")
            time.sleep(0.1)
        defaults = rps(other)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    row("requests/s on `/`: `gunicorn <pkg>.wsgi:app` defaults", f"{defaults.rps:.0f}/s",
        f"{defaults.failed} failed, worst {defaults.worst_latency * 1000:.0f} ms (1 sync worker, no access log)")


def main() -> int:
    if find_sshd() is None:
        print("bench: needs sshd (apt-get install openssh-server)", file=sys.stderr)
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
        row("bake (cookiecutter --no-input)", secs(took))
        path = next((work / "bake").iterdir())
        subprocess.run(["git", "init", "-q"], cwd=path, check=True)
        remote_dir = work / "host" / "app"
        port = free_port()
        host = PrivateSshd(work / "sshd").start()
        project = Project(path, {"REMOTE_HOST": host.host_alias, "SSH_OPTS": host.ssh_opts,
                                 "PORT": str(port), "REMOTE_DIR": str(remote_dir)})

        took, _ = project.make("venv")
        row("`make venv` (cold, once per project)", secs(took), "pip install of requirements-dev.txt")
        project.make("test")
        took, _ = project.make("test")
        row("`make test` (warm)", secs(took), "check-config for every env + pytest")
        took, _ = project.make("pack")
        tarball = next((path / "build").glob("*.tar.gz"))
        row("`make pack` (first: downloads the wheelhouse)", secs(took))
        took, _ = project.make("pack")
        row("`make pack` (again: wheelhouse cached)", secs(took),
            f"tarball {tarball.stat().st_size / 1024:.0f} KiB, {tarball.name}")

        deploy_rows(project, "first deploy")
        deploy_rows(project, "redeploy, unchanged dependencies")
        floor_row(host, work, Path(os.path.realpath(remote_dir / "current")), project)
        handover_rows(project, port)
        throughput_rows(project, port, remote_dir)
    finally:
        if project is not None and host is not None:
            try:
                project.make("stop", remote=True)
            except (RuntimeError, subprocess.SubprocessError) as exc:
                say(f"make stop failed: {exc}")
        if host is not None:
            host.stop()
        shutil.rmtree(work, ignore_errors=True)
    row("bench run time", secs(time.monotonic() - started), f"load average {os.getloadavg()[0]:.2f} at end")

    print("| what | figure | notes |")
    print("|---|---|---|")
    for what, figure, note in rows:
        print(f"| {what} | {figure} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
