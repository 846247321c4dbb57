"""CFD_CPU=FILE: each test's CPU time, appended to FILE as "seconds nodeid" (where the suite's
time goes, beside --durations' wall times, which a loaded machine stretches).

Each pytest process (an xdist worker) moves itself into a cpuacct cgroup of its own, which
every process it starts inherits: make, ssh, the private sshd and what it runs, gunicorn.
A booted server's processes are its own machine's, not counted. A test's figure includes the
module fixtures it set up. Needs root and the cgroup v1 cpuacct controller (or v2's cpu.stat).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

V1 = Path("/sys/fs/cgroup/cpuacct")
V2 = Path("/sys/fs/cgroup/unified") if Path("/sys/fs/cgroup/unified/cgroup.procs").exists() else Path("/sys/fs/cgroup")


class CpuPerTest:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.root = V1 if (V1 / "cpuacct.usage").exists() else V2
        self.group = self.root / f"cfd-cpu-{os.getpid()}"
        self.group.mkdir(exist_ok=True)
        (self.group / "cgroup.procs").write_text(str(os.getpid()))

    def usage(self) -> float:
        if self.root == V1:
            return int((self.group / "cpuacct.usage").read_text()) / 1e9
        stat = dict(line.split() for line in (self.group / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"]) / 1e6

    def pytest_unconfigure(self, config) -> None:
        (self.root / "cgroup.procs").write_text(str(os.getpid()))
        try:
            self.group.rmdir()
        except OSError:
            pass  # a process of the run outlived it

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        before = self.usage()
        yield
        with self.path.open("a") as out:
            out.write(f"{self.usage() - before:.2f} {item.nodeid}\n")


def register(config) -> None:
    if os.environ.get("CFD_CPU"):
        config.pluginmanager.register(CpuPerTest(os.environ["CFD_CPU"]), "cfd-cpu")
