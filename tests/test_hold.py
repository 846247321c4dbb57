"""make lock MESSAGE="…" holds every change on the host until make unlock: each command
that would change what runs is refused with who, when and the message, and the running
release keeps serving. A real sshd host, a real deploy."""
from __future__ import annotations

import re
import subprocess

import pytest
from harness.app import new_app

MESSAGE = "incident 42: no deploys until the database is back"


@pytest.fixture(scope="module")
def app(baked_project, sshd_host, tmp_path_factory, request):
    deployed = new_app(baked_project, sshd_host, tmp_path_factory, request)
    deployed.deploy()
    deployed.deploy()  # a release to roll back to
    return deployed


def test_a_hold_refuses_every_change_naming_who_and_why_until_unlock(app):
    serving = app.current()
    backup = re.search(r"^backup: (\S+)", app.make("db-backup").stdout, re.M)[1]
    held = app.make("lock", MESSAGE=MESSAGE)
    assert "held: deploys to this host are refused until make unlock" in held.stdout, held.stdout
    status = app.make("lock-status").stdout
    assert re.search(rf"^hold: held by \S+@\S+ since \d{{4}}-\d\d-\d\dT[\d:]+Z: {MESSAGE}$", status, re.M), status
    again = app.make("lock", check=False, MESSAGE="a second one")
    assert again.returncode != 0 and "a hold is there already" in again.stderr

    refused = {target: app.make(target, check=False, **extra) for target, extra in [
        ("deploy", {}), ("rollback", {}), ("restart", {}), ("stop", {}), ("start", {}),
        ("config-unset", {"SETTING": "app.message"}), ("db-restore", {"BACKUP": backup, "CONFIRM": "1"})]}
    config_set = subprocess.run(["make", "--no-print-directory", "config-set", "SETTING=app.message",
                                 *(f"{k}={v}" for k, v in app.vars.items())], cwd=app.project, input="hi\n",
                                capture_output=True, text=True, check=False)
    refused["config-set"] = config_set
    for target, result in refused.items():
        assert result.returncode != 0, (target, result.stdout)
        assert "deploys to this host are held by" in result.stderr and MESSAGE in result.stderr, (target, result.stderr)
    planned = app.make("plan", check=False)
    assert planned.returncode != 0 and "refused: deploys are held by" in planned.stdout, planned.stdout
    assert app.current() == serving and app.healthz()["release"] == serving  # it kept serving throughout

    lifted = app.make("unlock")
    assert "hold lifted (held by" in lifted.stdout, lifted.stdout
    assert "hold: none" in app.make("lock-status").stdout
    app.deploy()
    assert app.current() != serving and app.healthz()["release"] == app.current()


def test_a_hold_needs_a_message(app):
    refused = app.make("lock", check=False)
    assert refused.returncode != 0 and 'say why: make lock MESSAGE="' in refused.stderr
    assert "hold: none" in app.make("lock-status").stdout
