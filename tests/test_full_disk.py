"""A host whose disk is full: the commands a user needs then still answer, check-host names
the disk, and a deploy stops with one sentence while the running release keeps serving.

The app's directory is a small tmpfs of its own (root mounts it), filled after a deploy.
"""
from __future__ import annotations

import os
import subprocess

import pytest
from conftest import missing
from harness.app import App, healthz
from harness.sshd import free_port


@pytest.fixture()
def full_disk_app(baked_project, sshd_host, tmp_path_factory, request):
    if os.geteuid() != 0:
        missing("a full disk is a tmpfs the tests mount: run the tests as root")
    mount = tmp_path_factory.mktemp("disk")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(mount)], check=True)
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(mount)], check=False))
    app = App(baked_project, sshd_host, mount / "app", free_port())
    request.addfinalizer(app.stop_everything)  # runs first: finalizers go last in, first out
    app.deploy()
    return app, mount


def fill(mount) -> None:
    """Every byte of the tmpfs taken (dd stops at ENOSPC)."""
    subprocess.run(["dd", "if=/dev/zero", f"of={mount}/filler", "bs=1M"], capture_output=True, check=False)
    subprocess.run(["dd", "if=/dev/zero", f"of={mount}/filler2", "bs=1k"], capture_output=True, check=False)
    assert os.statvfs(mount).f_bavail == 0


def test_on_a_full_disk_the_commands_answer_and_a_deploy_stops_with_one_sentence(full_disk_app):
    app, mount = full_disk_app
    serving = app.current()
    fill(mount)

    status = app.make("status")
    assert f"release: {serving}" in status.stdout and "healthz: {" in status.stdout, status.stdout
    assert f"* {serving} (current)" in app.make("releases").stdout
    assert " deploy none " in app.make("history").stdout
    assert "Booting worker" in app.make("logs", LINES="50").stdout

    report = app.make("check-host", check=False)
    assert report.returncode != 0
    assert "disk: 0 MiB free in " in report.stdout, report.stdout
    assert f"error: the disk of {app.dir} is nearly full (0 MiB free)" in report.stderr, report.stderr

    planned = app.make("plan", check=False)  # the plan says so first, and writes nothing either
    assert planned.returncode != 0 and "refused: the host has 0 MiB free where the app lives" in planned.stdout, \
        planned.stdout + planned.stderr

    refused = app.make("deploy", check=False)
    assert refused.returncode != 0
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "MiB free where the app lives" in errors[0] and "nothing was sent" in errors[0], \
        refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
    assert app.current() == serving and healthz(app.port)["release"] == serving

    stopped = app.make("stop")
    assert "stopped (was pid" in stopped.stdout
