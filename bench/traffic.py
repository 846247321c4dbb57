"""bench/run.py's traffic figures (issue 22): what a deploy costs on the wire and locally,
on namespace hosts (tests/harness/netns.py, root only).

- Bytes: every byte this machine sends a host during a deploy, ssh and scp together, as
  the kernel counts them on the host's own link (its veth's tx_bytes, headers included),
  for a first deploy, an unchanged redeploy and one with a dependency added and another
  bumped. Target: an unchanged redeploy ≤ 100 KB; a changed one ≤ its new wheels + 100 KB.
- Logins: the ssh connections each host's sshd accepted ("Accepted publickey" at INFO).
- A rollout to 1, 2 and 4 hosts (unchanged redeploys): wall time, and this machine's CPU
  time for each host added (target ≤ 50 ms): the deploy program's own (SHIP_CPU=1 prints
  it), not its children's: make test's is the same whatever the number of hosts, and
  ssh's and scp's encryption is left out.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from harness.netns import NamespaceHosts, unavailable
from harness.sshd import free_port

import installs

TARGET_UNCHANGED = 100_000  # bytes: an unchanged redeploy, every ssh and scp byte
TARGET_EXTRA = 100_000  # bytes over the new wheels, for a changed one
TARGET_HOST_CPU = 0.050  # seconds of local CPU per host added
ROLLOUTS = (1, 2, 4)
ROUNDS = 3  # each rollout's least wall and CPU time of this many: one run's CPU varies by 100 ms


def sent(hosts: NamespaceHosts) -> dict[str, int]:
    """Bytes sent to each host so far (the root side of its veth transmits to it)."""
    return {h.alias: int(Path(f"/sys/class/net/{h.veth}/statistics/tx_bytes").read_text()) for h in hosts}


def logins(hosts: NamespaceHosts) -> dict[str, int]:
    return {h.alias: h.sshd.log.read_text(errors="replace").count("Accepted publickey") for h in hosts}


def deploy(project: Path, variables: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, the deploy program's own CPU seconds, output) of `make deploy`."""
    started = time.monotonic()
    result = subprocess.run(["make", "--no-print-directory", "deploy", "SHIP_CPU=1",
                             *(f"{k}={v}" for k, v in variables.items())],
                            cwd=project, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"make deploy failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    out = result.stdout + result.stderr
    cpu = re.findall(r"^\s*ship cpu: ([\d.]+)s$", out, re.M)
    return wall, float(cpu[-1]) if cpu else float("nan"), out


def new_wheels_size(project: Path, alias: str) -> int:
    """The size of the dependency wheels in the last lean upload: what the host lacked (the
    app's own wheel, sent with every release, counts as overhead)."""
    package = next(project.glob("src/*/wsgi.py")).parent.name
    with tarfile.open(project / "build" / "hosts" / f"{alias}.upload.tar.gz") as tar:
        return sum(m.size for m in tar.getmembers()
                   if m.name.endswith(".whl") and not Path(m.name).name.startswith(f"{package}-"))


def traffic_rows(project: Path, work: Path, row: Callable[..., None]) -> None:
    reason = unavailable()
    if reason:
        row("traffic and rollouts (namespace hosts)", "skipped", reason)
        return
    port = str(free_port())
    with NamespaceHosts(work / "ns", count=max(ROLLOUTS), log_level="INFO") as hosts:
        one = {"REMOTE_HOST": hosts[0].alias, "SSH_OPTS": hosts.ssh_opts, "REMOTE_DIR": str(hosts.remote_dir),
               "PORT": port}
        figures = {}
        for label in ("first deploy", "redeploy, unchanged dependencies", "redeploy, one added and one changed"):
            b0, l0 = sent(hosts)[hosts[0].alias], logins(hosts)[hosts[0].alias]
            if label.startswith("redeploy, one"):
                with installs.changed_dependencies(project):
                    _, _, out = deploy(project, one)
            else:
                _, _, out = deploy(project, one)
            figures[label] = (sent(hosts)[hosts[0].alias] - b0, logins(hosts)[hosts[0].alias] - l0, out)
        first, _, _ = figures["first deploy"]
        unchanged, unchanged_logins, _ = figures["redeploy, unchanged dependencies"]
        changed, changed_logins, _ = figures["redeploy, one added and one changed"]
        wheels = new_wheels_size(project, hosts[0].alias)
        row("first deploy: bytes sent to the host (ssh and scp, on its link)", f"{first / 1024:.0f} KiB",
            f"{figures['first deploy'][1]} ssh login(s)")
        row("redeploy, unchanged dependencies: bytes sent", f"{unchanged / 1000:.1f} KB",
            f"target ≤ {TARGET_UNCHANGED / 1000:.0f} KB: {'met' if unchanged <= TARGET_UNCHANGED else 'NOT met'}; "
            f"{unchanged_logins} ssh login(s)")
        extra = changed - wheels
        row("redeploy, one added and one changed dependency: bytes sent", f"{changed / 1000:.1f} KB",
            f"its new wheels {wheels / 1000:.1f} KB + {extra / 1000:.1f} KB; target ≤ wheels + "
            f"{TARGET_EXTRA / 1000:.0f} KB: {'met' if extra <= TARGET_EXTRA else 'NOT met'}; "
            f"{changed_logins} ssh login(s)")
        rollout_rows(project, hosts, port, row)


def bake_without_database(work: Path) -> Path:
    """A bake with database=none, its venv made: SQLite's file per host is refused on
    several hosts, so the rollouts use this one."""
    root = Path(__file__).resolve().parent.parent
    subprocess.run([str(Path(sys.executable).parent / "cookiecutter"), "--no-input", "-o", str(work / "none"), str(root),
                    "database=none"], check=True, capture_output=True)
    project = next((work / "none").iterdir())
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["make", "venv"], cwd=project, check=True, capture_output=True)
    return project


def rollout_rows(project: Path, hosts: NamespaceHosts, port: str, row: Callable[..., None]) -> None:
    """Unchanged redeploys to 1, 2 and 4 hosts (each deployed once first, so that none is a
    first deploy) of a bake without a database, ROUNDS times each; local CPU per host added,
    from the deploy program's `ship cpu:` line."""
    project = bake_without_database(hosts.base)
    every = {"REMOTE_HOSTS": hosts.aliases, "SSH_OPTS": hosts.ssh_opts, "REMOTE_DIR": str(hosts.remote_dir),
             "PORT": port}
    deploy(project, every)  # every host has the release: the rollouts below are redeploys
    measured = {}
    for count in ROLLOUTS:
        names = " ".join(h.alias for h in list(hosts)[:count])
        before = logins(hosts)
        rounds = [deploy(project, {**every, "REMOTE_HOSTS": names})[:2] for _ in range(ROUNDS)]
        after = logins(hosts)
        per_host = sum(after[h] - before[h] for h in names.split()) / count / ROUNDS
        measured[count] = (min(w for w, _ in rounds), min(c for _, c in rounds), per_host)
    base_wall, base_cpu, _ = measured[1]
    for count in ROLLOUTS:
        wall, cpu, per_host = measured[count]
        added = (cpu - base_cpu) / (count - 1) if count > 1 else 0.0
        note = f"{per_host:.0f} ssh login(s) per host; the deploy program's CPU {cpu * 1000:.0f} ms"
        if count > 1:
            note += (f", {added * 1000:.0f} ms per host added: target ≤ {TARGET_HOST_CPU * 1000:.0f} ms: "
                     f"{'met' if added <= TARGET_HOST_CPU else 'NOT met'}; {wall / base_wall:.2f}× one host's wall time")
        row(f"rollout to {count} host(s), unchanged: wall time (least of {ROUNDS})", f"{wall:.1f} s", note)
