"""Deploying as root, the app's own account cannot become root (issue #19, High).

On a booted Debian server (tests/harness/systemd.py) deployed to as root, the app's account
(which owns shared/) plants what an attacker would: links in place of every file and
directory root touches there, pointing at root's files; a fifo; a hard link where the
kernel lets it; an executable where root once looked for the interpreter. Then a deploy,
a rollback, a db-backup and a prune (KEEP_RELEASES=1) run. Nothing root owns outside the
app's directory may change, and nothing of the account's may run as root. Every command
ends in a result or a one-sentence refusal, never a traceback.
"""
from __future__ import annotations

import re
import shlex

import pytest
from conftest import missing
from harness.systemd import SystemdServer, rootfs, unavailable
from test_systemd import Served

APP = "/srv/my-flask-app"
ACCOUNT = "my-flask-app"
# Root's files the plants point at: each must be exactly as it was at the end.
VICTIMS = "/root/victim"
SNAPSHOT = ("find /etc /root /usr/local /var/lib/systemd/linger -xdev ! -path '/etc/systemd/system/my-flask-app-*' "
            "-printf '%p %u %m %s %y %l\\n' | sort; sha256sum $(find /root /etc/passwd /etc/shadow -xdev -type f) | sort")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    reason = unavailable()
    if reason:
        missing(f"systemd servers: {reason}")
    rootfs("bookworm")
    booted = SystemdServer(tmp_path_factory.mktemp("root-state"), "rootstate", 3, "bookworm").start()
    try:
        yield booted
    finally:
        booted.stop()


def as_account(app: Served, script: str, check: bool = True):
    """SCRIPT in sh as the app's account, in the app's directory."""
    return app.ssh(f"cd {APP} && runuser -u {ACCOUNT} -- sh -c {shlex.quote(script)}", check=check)


def plant(app: Served) -> None:
    """What the account can plant, in place of what root reads, writes, chowns or deletes."""
    app.ssh(f"mkdir -p {VICTIMS}/dir && echo root-only >{VICTIMS}/file && echo keep >{VICTIMS}/dir/keep.backup "
            f"&& chmod 600 {VICTIMS}/file")
    release = app.current()
    old = re.sub(r"\d{8}T\d{6}Z$", "20000101T000000Z", release)
    evil = ("#!/bin/sh\\ntouch " + APP + "/shared/ran-as-$(id -u)\\n")
    as_account(app, " && ".join([
        # the files root once kept in shared/, and the old wheel cache: links to root's
        f"ln -sfn {VICTIMS}/file shared/deploys.log", f"ln -sfn {VICTIMS}/file shared/run/port",
        f"ln -sfn {VICTIMS}/dir shared/wheels",
        # what root writes or deletes in shared/: links and a fifo
        f"ln -sfn {VICTIMS}/file shared/log/smoke.log", f"ln -sfn {VICTIMS}/file shared/run/gunicorn.pid.2",
        f"ln -sfn {VICTIMS}/file shared/run/gunicorn.pid.tmp", "mkdir -p shared/run/smoke",
        f"ln -sfn {VICTIMS}/file shared/run/smoke/smoke.pid", "rm -f shared/run/smoke/smoke.sock",
        "mkfifo shared/run/smoke/smoke.sock",
        # a backup prune would delete, as a link to root's file; a fifo among the backups
        f"mkdir -p shared/backups && ln -sfn {VICTIMS}/file shared/backups/{old}.backup",
        "mkfifo shared/backups/manual-fifo.backup",
        # what a chown of shared/ would follow: a link to a root directory
        f"ln -sfn {VICTIMS}/dir shared/elsewhere",
        # where root once took the interpreter from
        f"printf '{evil}' >shared/run/python && chmod 755 shared/run/python",
    ]))
    # A hard link to a root file: the kernel refuses it (fs.protected_hardlinks=1) on these
    # machines; if it ever allows it, the chown below must still leave the file root's.
    as_account(app, f"ln {VICTIMS}/file shared/hardlink", check=False)


def test_the_apps_account_plants_links_and_root_follows_none(server, baked_project):
    app = Served(baked_project, server, "root", APP)
    app.make("deploy")
    app.make("deploy")  # a second release: a rollback target
    assert app.ssh(f"stat -c %U {APP}/state {APP}/state/deploys.log {APP}/state/wheels").stdout.split() == ["root"] * 3
    assert app.ssh(f"stat -c %a {APP}/state").stdout.strip() == "700"
    plant(app)
    before = app.ssh(SNAPSHOT).stdout
    said = []
    for target, extra in (("deploy", {"KEEP_RELEASES": "1"}), ("rollback", {}), ("db-backup", {}),
                          ("deploy", {"KEEP_RELEASES": "1"}), ("history", {}), ("logs", {}), ("status", {})):
        result = app.make(target, check=False, **extra)
        text = result.stdout + result.stderr
        said.append(f"--- make {target}: {result.returncode}\n{text}")
        assert "Traceback" not in text, text
        assert result.returncode == 0, "\n".join(said)
    after = app.ssh(SNAPSHOT).stdout
    assert after == before, "\n".join(said)
    assert app.ssh(f"cat {VICTIMS}/file; stat -c '%U %a' {VICTIMS}/file {VICTIMS}/dir; ls {VICTIMS}/dir").stdout == (
        "root-only\nroot 600\nroot 755\nkeep.backup\n")
    ran = app.ssh(f"ls {APP}/shared | grep ran-as- || true").stdout.split()
    assert "ran-as-0" not in ran, ran
    # The plants that root would have followed are gone or left alone, never used:
    # the history and the port are root's, in state/.
    assert app.ssh(f"stat -c %U {APP}/state/deploys.log {APP}/state/port").stdout.split() == ["root", "root"]
    assert app.release() == app.current()
    # The smoke socket's directory is the account's alone (and the socket, while it is up, 0600).
    assert app.ssh(f"stat -c '%U %a' {APP}/shared/run/smoke").stdout.strip() == f"{ACCOUNT} 700"
    app.make("stop")
