"""The host program's pure logic (deploy/host/), by import: release order, prune, rotation,
the lock, the units, the registry, settings; and the bundle the Makefile sends."""
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parents[1] / "deploy"
sys.path.insert(0, str(DEPLOY))
from host import cli, commands, context, install, logs, procs, releases, sandbox, systemd

A, B, C, D, E = (f"{v}-2026120{n}T000000Z" for n, v in enumerate(["1.2.0", "0.9.0", "1.10.0", "1.3.0", "2.0.0"], 1))


def releases_dir(tmp_path, finished=(), unfinished=(), refused=(), current=None):
    for name in (*finished, *unfinished, *refused):
        (tmp_path / "releases" / name).mkdir(parents=True)
    for name in unfinished:
        (tmp_path / "releases" / name / ".unfinished").touch()
    for name in refused:
        (tmp_path / "releases" / name / ".refused").touch()
    if current:
        os.symlink(f"releases/{current}", tmp_path / "current")
    return tmp_path


def test_releases_are_ordered_by_their_timestamp_not_their_version(tmp_path):
    app = releases_dir(tmp_path, finished=[E, C, A, D, B])
    assert releases.Releases.read(app / "releases").finished == [A, B, C, D, E]


def test_unfinished_and_refused_releases_are_never_finished(tmp_path):
    app = releases_dir(tmp_path, finished=[A, C], unfinished=[D], refused=[B])
    listing = releases.Releases.read(app / "releases")
    assert (listing.finished, listing.unfinished, listing.refused) == ([A, C], [D], [B])


def test_previous_is_the_newest_finished_release_older_than_current():
    listing = releases.Releases([A, B, C, D], [], [])
    assert listing.previous(D) == C
    assert listing.previous(B) == A  # after a rollback to B
    assert listing.previous(A) is None
    assert listing.previous("elsewhere") is None


@pytest.mark.parametrize("current, keep, pruned", [
    (E, 2, [A, B, C]),  # the newest two stay
    (E, 5, []),
    (E, 1, [A, B, C]),  # never the one before current (D)
    (B, 2, [C]),  # after a rollback to B: B and A (the one before) stay, and the newest two
    (A, 1, [B, C, D]),  # rolled back to the oldest: it stays, and the newest one
])
def test_prune_keeps_the_newest_and_never_current_or_the_one_before(current, keep, pruned):
    assert releases.Releases([A, B, C, D, E], [], []).to_prune(current, keep) == pruned


def test_prune_drops_unfinished_work_and_refused_releases_but_a_current_one():
    listing = releases.Releases([A], unfinished=[C], refused=[B, D])
    assert listing.to_prune(D, 5) == [C, B]


def test_a_releases_backup_goes_with_it_manual_ones_stay():
    names = [f"{A}.backup", f"{C}.backup", f"manual-{A}.backup", "notes.txt", f"{D}.backup"]
    assert releases.backups_to_prune(names, C) == [f"{A}.backup"]
    assert releases.backups_to_prune(names, None) == []


def test_prune_command_removes_releases_backups_and_unused_wheels(tmp_path):
    app = releases_dir(tmp_path, finished=[A, B, C, D], refused=[E], current=D)
    (app / "releases" / D / "SHA256SUMS").write_text("aaa  wheels/x.whl\nbbb  config/base.ini\n")
    (app / "releases" / A / "SHA256SUMS").write_text("ccc  wheels/y.whl\n")
    wheels, backups = app / "state" / "wheels", app / "shared" / "backups"
    wheels.mkdir(parents=True)
    backups.mkdir(parents=True)
    for name in ("aaa", "bbb", "ccc", ".aaa.tmp"):
        (wheels / name).write_text(name)
    for name in (f"{A}.backup", f"{C}.backup", "manual-x.backup"):
        (backups / name).write_text("")
    releases.prune(app, 1)
    assert sorted(os.listdir(app / "releases")) == [C, D]  # D current, C the one before
    assert sorted(os.listdir(wheels)) == [".aaa.tmp", "aaa"]  # A's wheel went with A
    assert sorted(os.listdir(backups)) == [f"{C}.backup", "manual-x.backup"]


def test_prune_keeps_the_release_previous_points_at_whose_static_files_nginx_still_serves(tmp_path):
    app = releases_dir(tmp_path, finished=[A, B, C, D], current=B)  # rolled back from D to B
    os.symlink(f"releases/{D}", app / "previous")
    releases.prune(app, 1)
    assert sorted(os.listdir(app / "releases")) == sorted([A, B, D])  # C went, D stays for its static files


def test_a_switch_points_previous_at_what_was_current_first(tmp_path):
    from host import serve
    app = releases_dir(tmp_path, finished=[A, B, C])
    host = context.Host.__new__(context.Host)
    host.app, host.current, host.releases = app, app / "current", app / "releases"
    serve.switch_to(host, A)  # a first deploy: nothing before it
    assert os.readlink(app / "current") == f"releases/{A}" and not (app / "previous").is_symlink()
    serve.switch_to(host, B)
    serve.switch_to(host, B)  # again the same: previous stays
    assert (os.readlink(app / "current"), os.readlink(app / "previous")) == (f"releases/{B}", f"releases/{A}")
    serve.switch_to(host, C)
    serve.switch_to(host, B, bridge=False)  # put back: C served no page
    assert (os.readlink(app / "current"), os.readlink(app / "previous")) == (f"releases/{B}", f"releases/{B}")
    assert sorted(p.name for p in app.iterdir()) == ["current", "previous", "releases"]  # no temporary link left


def test_prune_never_deletes_through_a_planted_link(tmp_path):
    app = releases_dir(tmp_path, finished=[A, B, C], current=C)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    (app / "shared").mkdir()
    (app / "state").mkdir()
    (app / "state" / "wheels").symlink_to(victim)
    (app / "shared" / "backups").symlink_to(victim)
    releases.prune(app, 1)
    assert (victim / "precious").read_text() == "keep me"


def test_a_pruned_release_leaves_at_once_and_a_process_of_its_own_deletes_it(tmp_path):
    app = releases_dir(tmp_path, finished=[A, B, C], current=C)
    (app / "releases" / A / "venv" / "lib").mkdir(parents=True)
    (app / "releases" / A / "venv" / "lib" / "big.py").write_text("x")
    releases.prune(app, 1)
    assert sorted(os.listdir(app / "releases")) == [B, C]
    assert [name.rsplit(".", 1)[0] for name in os.listdir(app / ".trash")] == [A]
    releases.empty_trash(app)
    deadline = time.monotonic() + 10
    while os.listdir(app / ".trash") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.listdir(app / ".trash") == []


def test_a_planted_trash_link_is_never_deleted_through(tmp_path):
    app = releases_dir(tmp_path, finished=[A, B, C], current=C)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    (app / ".trash").symlink_to(victim)
    releases.prune(app, 1)
    releases.empty_trash(app, wait=True)
    assert sorted(os.listdir(app / "releases")) == [B, C] and os.listdir(victim) == ["precious"]


def test_rotation_renames_oldest_first_and_the_log_last(tmp_path):
    log = tmp_path / "gunicorn.log"
    assert [(a.name, b.name) for a, b in logs.rotation(log, 3)] == [
        ("gunicorn.log.2", "gunicorn.log.3"), ("gunicorn.log.1", "gunicorn.log.2"), ("gunicorn.log", "gunicorn.log.1")]


def test_rotate_logs_keeps_the_newest_and_leaves_small_logs(tmp_path):
    (tmp_path / "gunicorn.log").write_text("x" * 3000)
    (tmp_path / "access.log").write_text("small")
    for n in (1, 2):
        (tmp_path / f"gunicorn.log.{n}").write_text(f"old {n}")
    assert logs.rotate_dir(tmp_path, 2, 2) is True
    assert (tmp_path / "gunicorn.log.1").read_text() == "x" * 3000
    assert (tmp_path / "gunicorn.log.2").read_text() == "old 1"
    assert not (tmp_path / "gunicorn.log").exists() and not (tmp_path / "gunicorn.log.3").exists()
    assert (tmp_path / "access.log").read_text() == "small"


def test_releases_listing_marks_current_unfinished_and_refused(tmp_path, capsys):
    app = releases_dir(tmp_path, finished=[A, B], unfinished=[C], refused=[D], current=B)
    commands.cmd_releases(context.Host(context.Settings(app_dir=app), "releases"), None)
    assert capsys.readouterr().out.splitlines() == [
        f"  {A}", f"* {B} (current)", f"  {C} (unfinished, removed by the next deploy)",
        f"  {D} (refused: failed to boot, removed by the next deploy)"]


def test_registry_drives_help_and_dispatch(capsys):
    assert cli.main(["help"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed == list(cli.COMMANDS)
    assert cli.main(["no-such-command"]) == 1
    assert "unknown command 'no-such-command' (help targets install deploy" in capsys.readouterr().err


def test_the_make_targets_are_the_registrys_and_the_history_records_what_changes_what_runs(capsys):
    assert cli.main(["targets", "--make"]) == 0
    assert capsys.readouterr().out == "HOST_COMMANDS := start stop restart status logs releases history unlock lock lock-status setup-host maintenance live ps jobs run-job\n"
    recorded = [name for name, cmd in cli.COMMANDS.items() if cmd.recorded]
    assert recorded == ["deploy", "rollback", "start", "stop", "restart", "config_set", "config_unset", "db_restore"]


def test_an_old_python_is_named_by_its_version():
    """The guard is the first statement: on 3.9 the file stops there with one line."""
    main = (DEPLOY / "host" / "__main__.py").read_text()
    source = main.replace("sys.version_info < (3, 10)", "sys.version_info < (99, 0)")
    result = subprocess.run([sys.executable, "-c", source, "help"], check=False, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: the host program needs Python 3.10 or newer; "
                                     f"this is {sys.version.split()[0]}")
    assert main.index("sys.version_info <") < main.index("from host")


class Pages(BaseHTTPRequestHandler):
    def do_GET(self):
        status = {"/healthz": 200, "/": 200, "/login": 302, "/missing": 404}.get(self.path, 500)
        body = json.dumps({"status": "ok", "release": "r1"}).encode() if self.path == "/healthz" else b"page"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def app_port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_healthz_names_the_release(app_port, capsys):
    ok, answer = procs.wait_healthy(app_port, "r1", 0)
    assert ok and json.loads(answer) == {"status": "ok", "release": "r1"}
    assert procs.wait_healthy(app_port, "r2", 0.1, interval=0.02) == (False, answer)


def test_smoke_paths_pass_on_redirects_and_404_and_fail_on_a_5xx(app_port, capsys):
    assert procs.check_paths(app_port, ["/", "/login", "/missing"]) is None
    assert procs.check_paths(app_port, ["/", "/broken", "/login"]) == "GET /broken answered 500"


def test_a_path_nothing_answers_is_named():
    assert procs.check_paths("/nonexistent/smoke.sock", ["/"]).startswith("GET / got no answer (")


# --- install ------------------------------------------------------------------------------


def tar_member(name, kind=None, data=b"x", mode=0o644, uid=1000):
    import tarfile

    member = tarfile.TarInfo(name)
    member.type, member.mode, member.uid, member.gid, member.size = kind or tarfile.REGTYPE, mode, uid, uid, len(data)
    return member, data


def write_tarball(path, members):
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


@pytest.mark.parametrize("name, kind, why", [
    ("/etc/cron.d/x", None, "is not a relative path inside the release"),
    ("app-1.0/../../x", None, "is not a relative path inside the release"),
    ("app-1.0//deploy/x", None, "is not a relative path inside the release"),
    ("app-1.0/deploy/link", "SYMTYPE", "is a link, a device or a fifo, not a file"),
    ("app-1.0/deploy/hard", "LNKTYPE", "is a link, a device or a fifo, not a file"),
    ("app-1.0/dev", "CHRTYPE", "is a link, a device or a fifo, not a file"),
    ("app-1.0/disk", "BLKTYPE", "is a link, a device or a fifo, not a file"),
    ("app-1.0/pipe", "FIFOTYPE", "is a link, a device or a fifo, not a file"),
])
def test_unsafe_members_are_refused_before_anything_is_unpacked(tmp_path, name, kind, why):
    import tarfile

    member, data = tar_member(name, kind and getattr(tarfile, kind))
    if kind:
        member.linkname, member.size, data = "/etc/shadow", 0, b""
    tarball = write_tarball(tmp_path / "up.tar.gz", [tar_member("app-1.0/RELEASE"), (member, data)])
    with pytest.raises(context.Failure, match=f"upload up.tar.gz holds '{re.escape(name)}' {why}; nothing was installed"):
        install.unpack(tarball, tmp_path / "into")
    assert not (tmp_path / "into").exists()  # nothing at all was written, not even the good member
    assert sorted(os.listdir(tmp_path)) == ["up.tar.gz"]


def test_unpack_strips_the_top_folder_and_keeps_no_owner_or_odd_mode(tmp_path):
    tarball = write_tarball(tmp_path / "up.tar.gz", [
        tar_member("app-1.0/RELEASE", mode=0o666), tar_member("app-1.0/deploy/remote.sh", mode=0o4775)])
    install.unpack(tarball, tmp_path / "into")
    release, script = (tmp_path / "into" / "RELEASE").stat(), (tmp_path / "into" / "deploy" / "remote.sh").stat()
    assert (release.st_mode & 0o7777, script.st_mode & 0o7777) == (0o644, 0o755)
    assert release.st_uid == os.getuid() and script.st_gid == os.getgid()


def release_tree(root, files):
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "SHA256SUMS").write_text("".join(f"{install.hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items()))
    return root


def test_a_lean_upload_is_filled_from_the_cache_and_verified(tmp_path):
    files = {"RELEASE": b"version=1.0\n", "wheels/flask-3.whl": b"flask", "wheels/app-1.0.whl": b"app"}
    release = release_tree(tmp_path / "r", files)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / install.hashlib.sha256(b"flask").hexdigest()).write_bytes(b"flask")
    (release / "wheels" / "flask-3.whl").unlink()
    install.fill_and_verify(release, wheels)
    assert (release / "wheels" / "flask-3.whl").read_bytes() == b"flask"


def test_a_gap_the_cache_cannot_fill_asks_for_the_whole_release(tmp_path):
    release = release_tree(tmp_path / "r", {"wheels/flask-3.whl": b"flask"})
    (release / "wheels" / "flask-3.whl").unlink()
    (tmp_path / "wheels").mkdir()
    with pytest.raises(context.Failure, match="left out wheels/flask-3.whl, and this host has no copy") as refused:
        install.fill_and_verify(release, tmp_path / "wheels")
    assert refused.value.status == install.LEAN_RETRY


def test_a_corrupt_cached_wheel_is_removed_and_the_whole_release_asked_for(tmp_path):
    release = release_tree(tmp_path / "r", {"wheels/flask-3.whl": b"flask"})
    (release / "wheels" / "flask-3.whl").unlink()
    cached = tmp_path / "wheels" / install.hashlib.sha256(b"flask").hexdigest()
    cached.parent.mkdir()
    cached.write_bytes(b"flipped bit")
    with pytest.raises(context.Failure, match=r"cached copy of wheels/flask-3.whl was corrupt \(sha256\): removed") as refused:
        install.fill_and_verify(release, tmp_path / "wheels")
    assert refused.value.status == install.LEAN_RETRY and not cached.exists()


def test_a_file_that_fails_its_sha256_refuses_the_release(tmp_path):
    release = release_tree(tmp_path / "r", {"config/base.ini": b"[app]\n"})
    (release / "config" / "base.ini").write_bytes(b"[app]\ndebug = true\n")
    (tmp_path / "wheels").mkdir()
    with pytest.raises(context.Failure, match=r"do not match its SHA256SUMS \(config/base.ini\)") as refused:
        install.fill_and_verify(release, tmp_path / "wheels")
    assert refused.value.status == 1


# --- the deploy lock -------------------------------------------------------------------------


def dead_pid() -> str:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return str(proc.pid)


def test_the_lock_is_taken_once_and_names_its_holder(tmp_path):
    lock = tmp_path / ".deploy.lock"
    holder = subprocess.Popen(["sh", "-c", "sleep 30; :", "remote.sh"])  # a host script, to /proc (with "; :" sh does not exec sleep)
    try:
        for _ in range(200):  # Popen may return before the child has exec'd
            if b"remote.sh" in Path(f"/proc/{holder.pid}/cmdline").read_bytes():
                break
            time.sleep(0.01)
        assert releases.take_lock(lock, {"who": "ann@laptop", "pid": str(holder.pid)}) is None
        assert (lock / "info").read_text() == f"who=ann@laptop\npid={holder.pid}\n"
        refused = releases.take_lock(lock, {"who": "bob@ci", "pid": "1"})
        assert refused == (f"another deploy holds the lock on {tmp_path} (who=ann@laptop pid={holder.pid}); "
                           "wait for it, or run make unlock if it is dead")
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over(tmp_path, capsys):
    lock = tmp_path / ".deploy.lock"
    assert releases.take_lock(lock, {"who": "bob@crashed", "pid": dead_pid()}) is None
    assert releases.take_lock(lock, {"who": "ann@laptop", "pid": str(os.getpid())}) is None
    assert "taking over a stale deploy lock (who=bob@crashed" in capsys.readouterr().out
    assert releases.lock_info(lock)["who"] == "ann@laptop"


def test_a_lock_without_a_pid_is_held(tmp_path):
    """Its taker is writing the info just now, or someone holds it by hand: never stale."""
    lock = tmp_path / ".deploy.lock"
    lock.mkdir()
    (lock / "info").write_text("who=someone@elsewhere\nwhen=now\n")
    assert releases.take_lock(lock, {"who": "ann", "pid": dead_pid()}).startswith("another deploy holds the lock")
    (lock / "info").unlink()
    assert releases.take_lock(lock, {"who": "ann", "pid": dead_pid()}).startswith("another deploy holds the lock")


def test_a_pid_reused_by_another_program_is_no_holder(tmp_path):
    lock = tmp_path / ".deploy.lock"
    assert releases.take_lock(lock, {"who": "bob", "pid": str(os.getpid())}) is None  # pytest, not remote.sh
    assert releases.take_lock(lock, {"who": "ann", "pid": dead_pid()}) is None


# --- systemd units, as text -------------------------------------------------------------------


def units(kind="system", app_dir="/srv/app", **more):
    return systemd.Units("my-app", "prod", app_dir, "my-app-prod-1a2b3c4d", kind, "my-app", "8000", "python3",
                         "51200", "5", **{"memory_max_kb": "1048576", "tasks_max": "512", "systemd_version": 252, **more})


def test_the_system_unit_follows_the_pidfile_and_runs_sandboxed_as_the_apps_account():
    assert units().service() == """\
# Written by my-app's deploy/remote.sh for /srv/app; every deploy rewrites it.
[Unit]
Description=my-app (prod) from /srv/app
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=0

[Service]
Type=forking
PIDFile=/srv/app/shared/run/gunicorn.pid
ExecStart=/bin/sh /srv/app/remote.sh exec_master
Restart=always
RestartSec=1
TimeoutStartSec=60
TimeoutStopSec=35
Environment=APP_DIR=/srv/app APP_ENV=prod PORT=8000 PYTHON=python3 LOG_MAX_KB=51200 LOG_KEEP=5
UMask=0077
User=my-app
Group=my-app
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ReadWritePaths=/srv/app/shared
ProtectHome=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
CapabilityBoundingSet=
AmbientCapabilities=
RemoveIPC=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
MemoryMax=1048576K
TasksMax=512

[Install]
WantedBy=multi-user.target
"""


def test_a_user_unit_gets_what_a_user_manager_allows():
    """No account, no namespaces (a user manager would need a user namespace for them, which
    some hosts refuse: the unit would not start); the seccomp filters and the limits, yes."""
    text = units("user", "/home/deploy/apps/my-app").service()
    assert text.endswith("[Install]\nWantedBy=default.target\n")
    for absent in ("User=", "ProtectSystem", "PrivateTmp", "PrivateDevices", "ProtectKernel", "ProtectProc",
                   "CapabilityBoundingSet", "network-online"):
        assert absent not in text, absent
    for present in ("UMask=0077", "NoNewPrivileges=yes", "KeyringMode=private", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
                    "RestrictNamespaces=yes", "RestrictSUIDSGID=yes", "LockPersonality=yes",
                    "SystemCallFilter=@system-service", "MemoryMax=1048576K", "TasksMax=512",
                    "StartLimitIntervalSec=0", "After=network.target"):
        assert f"\n{present}\n" in text, present


def test_under_home_the_system_unit_reads_home_only():
    assert "ProtectHome=read-only" in units("system", "/home/deploy/apps/my-app").service()


def test_from_systemd_254_on_restarts_back_off():
    assert "RestartSteps" not in units(systemd_version=252).service()
    assert "RestartSec=1\nRestartSteps=5\nRestartMaxDelaySec=30\n" in units(systemd_version=257).service()


def test_without_limits_set_the_unit_has_none():
    text = units(memory_max_kb="", tasks_max="").service()
    assert "MemoryMax" not in text and "TasksMax" not in text


def test_the_limits_come_from_the_make_variables():
    settings = context.Settings.from_environment({"APP_DIR": "/srv/app", "MEMORY_MAX_KB": "2048", "TASKS_MAX": "64"})
    assert (settings.memory_max_kb, settings.tasks_max) == (2048, 64)
    assert context.Settings.from_environment({"APP_DIR": "/srv/app"}).memory_max_kb is None


def test_the_systemd_version_is_read_off_systemctls_first_line():
    assert systemd.parse_version("systemd 257 (257.9-1~deb13u1)\n+PAM +AUDIT\n") == 257
    assert systemd.parse_version("systemd 252 (252.30-1~deb12u2)") == 252
    assert systemd.parse_version("") == systemd.parse_version("nonsense 1") == 0


# --- the app's code outside its service, in the same sandbox ----------------------------------------


ENVIRON = {"MY_APP_ENV": "prod", "MY_APP_SHARED_DIR": "/srv/app/shared", "PATH": "/srv/app/releases/r/venv/bin:/usr/bin",
           "HOME": "/root", "SSH_CONNECTION": "10.0.0.1 22 10.0.0.2 5555", "LANG": "C.UTF-8"}


def test_where_systemd_runs_the_app_a_command_runs_in_a_transient_unit_with_its_sandbox():
    service = systemd.Service("system", "my-app-prod-1a2b3c4d", "my-app")
    argv = sandbox.command(service, units(), ["/bin/sh", "-c", "my_app check-config; echo '$HOME'"], "/srv/app/releases/r",
                           ENVIRON, "MY_APP")
    assert argv[:8] == ["systemd-run", "--quiet", "--wait", "--pipe", "--collect", "--service-type=exec",
                        f"--unit=my-app-prod-1a2b3c4d-run-{os.getpid()}",
                        "--description=my-app (prod): a command in the app's sandbox"]
    assert argv[argv.index("--"):] == ["--", "/bin/sh", "-c", "my_app check-config; echo '$HOME'"]  # one argument, as given
    assert "--working-directory=/srv/app/releases/r" in argv
    properties = [a.removeprefix("--property=") for a in argv if a.startswith("--property=")]
    assert properties == [line for line in units().common() if not line.startswith("Environment=")]
    for line in ("User=my-app", "ProtectSystem=strict", "ReadWritePaths=/srv/app/shared", "CapabilityBoundingSet=",
                 "SystemCallFilter=@system-service", "MemoryMax=1048576K", "TasksMax=512", "UMask=0077"):
        assert line in properties, line
    setenv = [a.removeprefix("--setenv=") for a in argv if a.startswith("--setenv=")]
    # the app's variables and PATH, not the ssh session's, nor root's HOME (the account has its own)
    assert setenv == ["LANG=C.UTF-8", "MY_APP_ENV=prod", "MY_APP_SHARED_DIR=/srv/app/shared",
                      "PATH=/srv/app/releases/r/venv/bin:/usr/bin"]


def test_the_smoke_boot_has_a_unit_of_its_name_and_make_shell_has_our_terminal():
    service = systemd.Service("system", "my-app-prod-1a2b3c4d", "my-app")
    smoke = sandbox.command(service, units(), ["/srv/app/releases/r/venv/bin/gunicorn", "--bind", "unix:s"],
                            "/srv/app/releases/r", ENVIRON, "MY_APP", name="smoke")
    # one name: the next deploy stops the smoke boot of one that was killed mid-boot
    assert "--unit=my-app-prod-1a2b3c4d-smoke" in smoke and "--pipe" in smoke and "--wait" in smoke
    shell = sandbox.command(service, units(), ["/srv/app/releases/r/venv/bin/flask", "shell"], "/srv/app/releases/r",
                            ENVIRON, "MY_APP", terminal=True)
    assert "--pty" in shell and "--pipe" not in shell and "--property=CapabilityBoundingSet=" in shell


def test_a_user_units_command_runs_under_the_user_manager_with_its_sandbox(tmp_path):
    service = systemd.Service("user", "my-app-prod-1a2b3c4d", "deploy")
    user_units = units("user", "/home/deploy/apps/my-app")
    (tmp_path / "bus").touch()  # the user's D-Bus socket, as dbus-user-session makes it
    environ = {**ENVIRON, "XDG_RUNTIME_DIR": str(tmp_path)}
    argv = sandbox.command(service, user_units, ["/bin/true"], "/tmp", environ, "MY_APP")
    assert argv[:2] == ["systemd-run", "--user"]
    assert "--property=NoNewPrivileges=yes" in argv and "--property=User=deploy" not in argv
    assert not any(a.startswith("--property=ProtectSystem") for a in argv)
    assert "--setenv=HOME=/root" in argv  # the user's own HOME (here: the test's), kept
    # without the user's D-Bus, systemd-run --user cannot wait: the command runs as it is
    (tmp_path / "bus").unlink()
    assert sandbox.command(service, user_units, ["/bin/true"], "/tmp", environ, "MY_APP") == ["/bin/true"]


def test_without_systemd_a_command_runs_as_it_is():
    service = systemd.Service("daemon", "my-app-prod-1a2b3c4d", "deploy", "no systemd")
    assert sandbox.command(service, units("user"), ["/bin/sh", "-c", "x"], "/tmp", ENVIRON, "MY_APP") == [
        "/bin/sh", "-c", "x"]


def test_the_rotation_timer_runs_every_five_minutes_and_its_service_rotates():
    files = units().files()
    assert list(files) == ["my-app-prod-1a2b3c4d.service", "my-app-prod-1a2b3c4d-logs.service",
                           "my-app-prod-1a2b3c4d-logs.timer"]
    assert "OnUnitActiveSec=5min\n" in files["my-app-prod-1a2b3c4d-logs.timer"]
    assert "Type=oneshot\nExecStart=/bin/sh /srv/app/remote.sh rotate_logs\n" in files["my-app-prod-1a2b3c4d-logs.service"]


def test_a_unit_is_rewritten_only_when_its_text_changed(tmp_path):
    path = tmp_path / "x.service"
    assert systemd.replace_if_changed(path, "a\n") is True
    mtime = path.stat().st_mtime_ns
    assert systemd.replace_if_changed(path, "a\n") is False and path.stat().st_mtime_ns == mtime
    assert systemd.replace_if_changed(path, "b\n") is True and path.read_text() == "b\n"


# --- settings from the environment, and small helpers ------------------------------------------


def test_settings_name_the_variable_that_is_not_a_number():
    with pytest.raises(context.Failure, match="PORT must be a number, got '80; rm -rf /'"):
        context.Settings.from_environment({"APP_DIR": "/srv/app", "PORT": "80; rm -rf /"})
    with pytest.raises(context.Failure, match="PORT must be between 1 and 65535, got 70000"):
        context.Settings.from_environment({"APP_DIR": "/srv/app", "PORT": "70000"})
    with pytest.raises(context.Failure, match="APP_DIR is not set"):
        context.Settings.from_environment({})


def test_a_relative_app_dir_is_under_home_and_defaults_fill_the_rest():
    settings = context.Settings.from_environment({"APP_DIR": "apps/x", "HOME": "/home/ann", "KEEP_RELEASES": "3"})
    assert (settings.app_dir, settings.keep, settings.env, settings.port) == (Path("/home/ann/apps/x"), 3, "prod", None)


def test_the_unit_is_named_after_the_app_its_environment_and_its_directory():
    name = systemd.Service.unit_name(Path("/srv/app"), "prod")
    assert name.rsplit("-", 2)[1:] == ["prod", __import__("hashlib").sha256(b"/srv/app").hexdigest()[:8]]


def test_each_environment_runs_as_an_account_of_its_own_in_a_root_deploy():
    accounts = {env: systemd.app_account(env) for env in ("prod", "staging", "qa-2", "a-very-long-review-environment")}
    assert accounts["prod"] == "{{ cookiecutter.project_slug }}"[:32]
    assert accounts["staging"] == "{{ cookiecutter.project_slug }}-staging"[:32] or len("{{ cookiecutter.project_slug }}-staging") > 32
    assert len(set(accounts.values())) == len(accounts)
    assert all(len(name) <= 32 for name in accounts.values()), accounts


def test_uptime_reads_like_ps_etime():
    assert procs.uptime(os.getpid()).count(":") in (1, 2)
    assert procs.uptime(2 ** 22 + 12345) == "?"
