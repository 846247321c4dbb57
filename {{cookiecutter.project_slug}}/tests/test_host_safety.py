"""What root does in the app's shared/ (deploy/host/safe.py), the deploy lock's takeover
race, the smoke socket's peer check and the host's refusals: each test plants what an
attacker or a fault would, with real files and processes, then checks nothing happened."""
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parents[1] / "deploy"
sys.path.insert(0, str(DEPLOY))
from host import context, procs, releases, safe


@pytest.fixture()
def shared(tmp_path):
    """A shared/ with run/ and log/, and a victim outside it: a file and a directory."""
    (tmp_path / "shared" / "run").mkdir(parents=True)
    (tmp_path / "shared" / "log").mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "file").write_text("keep me")
    return tmp_path / "shared"


def victim_untouched(shared: Path) -> bool:
    victim = shared.parent / "victim"
    return sorted(os.listdir(victim)) == ["file"] and (victim / "file").read_text() == "keep me"


def test_a_file_planted_as_a_link_is_neither_read_nor_written(shared):
    (shared / "run" / "gunicorn.pid").symlink_to(shared.parent / "victim" / "file")
    assert procs.read_pid(shared / "run" / "gunicorn.pid") is None
    with pytest.raises(safe.Unsafe, match="a link where a file belongs"):
        safe.open_file(shared, "run/gunicorn.pid", os.O_WRONLY | os.O_CREAT)
    assert safe.read_text(shared, "run/gunicorn.pid") is None
    assert victim_untouched(shared)


def test_a_directory_planted_as_a_link_is_never_walked_through(shared):
    (shared / "run").rmdir()
    (shared / "run").symlink_to(shared.parent / "victim")
    for write in (lambda: safe.open_file(shared, "run/file", os.O_WRONLY | os.O_TRUNC),
                  lambda: safe.open_file(shared, "run/new", os.O_WRONLY | os.O_CREAT),
                  lambda: safe.write_text(shared, "run/file", "pwned"),
                  lambda: safe.make_dir(shared, "run/smoke")):
        with pytest.raises(safe.Unsafe, match="a link or a file where a directory belongs"):
            write()
    safe.unlink(shared, "run/file")  # nothing of ours there: nothing removed
    assert victim_untouched(shared)


def test_a_fifo_is_refused_at_once_not_opened(shared):
    os.mkfifo(shared / "run" / "gunicorn.pid")
    started = time.monotonic()
    assert procs.read_pid(shared / "run" / "gunicorn.pid") is None  # a blocking open would hang here
    with pytest.raises(safe.Unsafe, match="not a plain file"):
        safe.open_file(shared, "run/gunicorn.pid", os.O_WRONLY | os.O_APPEND)
    assert time.monotonic() - started < 1


def test_a_hard_link_is_never_written(shared):
    os.link(shared.parent / "victim" / "file", shared / "log" / "smoke.log")
    with pytest.raises(safe.Unsafe, match="a hard link"):
        safe.open_file(shared, "log/smoke.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    assert victim_untouched(shared)


def test_write_text_replaces_a_planted_link_and_leaves_its_target(shared):
    (shared / "run" / "gunicorn.pid").symlink_to(shared.parent / "victim" / "file")
    safe.write_text(shared, "run/gunicorn.pid", "123\n", 0o644)
    assert not (shared / "run" / "gunicorn.pid").is_symlink()
    assert procs.read_pid(shared / "run" / "gunicorn.pid") == 123
    assert victim_untouched(shared)


def test_unlink_removes_a_link_itself_never_its_target(shared):
    (shared / "run" / "smoke.pid").symlink_to(shared.parent / "victim" / "file")
    safe.unlink(shared, "run/smoke.pid")
    assert not os.path.lexists(shared / "run" / "smoke.pid")
    assert victim_untouched(shared)


def test_the_chown_of_leftovers_takes_plain_files_and_dirs_only(shared):
    """Run as anyone: FROM_UID is ours here (root's on a host), the chown a no-op to us."""
    (shared / "run" / "gunicorn.pid").write_text("1\n")
    (shared / "elsewhere").symlink_to(shared.parent / "victim")
    os.mkfifo(shared / "run" / "fifo")
    os.link(shared.parent / "victim" / "file", shared / "log" / "hardlink")
    me = os.getuid()
    changed = safe.chown_root_leftovers(shared, me, os.getgid(), from_uid=me)
    assert sorted(changed) == [".", "log", "run", "run/gunicorn.pid"]


def test_prune_deletes_backups_through_no_planted_link(tmp_path):
    app = tmp_path / "app"
    (app / "releases" / "1.0-20261202T000000Z").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "1.0-20000101T000000Z.backup").write_text("keep me")
    (app / "shared").mkdir()
    (app / "shared" / "backups").symlink_to(victim)
    releases.prune(app, 1)
    assert (victim / "1.0-20000101T000000Z.backup").read_text() == "keep me"


def test_root_state_lives_beside_shared_closed_to_others(tmp_path):
    app = tmp_path / "app"
    (app / "shared").mkdir(parents=True)
    (app / "shared" / "deploys.log").write_text("2026-12-01T00:00:00Z ann deploy none a ok 1.000s\n")
    (app / "shared" / "wheels").symlink_to(tmp_path)  # an old cache, here a planted link
    host = context.Host(context.Settings(app_dir=app), "deploy")
    host.make_dirs()
    assert (app / "state").stat().st_mode & 0o777 == 0o700
    assert (app / "state" / "deploys.log").read_text().startswith("2026-12-01T00:00:00Z ann deploy")
    assert not os.path.lexists(app / "shared" / "deploys.log") and not os.path.lexists(app / "shared" / "wheels")
    assert tmp_path.is_dir()


# --- the smoke socket: only the app's own account may answer on it ----------------------------


class Healthz(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"status": "ok", "release": "r1"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class UnixServer(ThreadingHTTPServer):
    address_family = socket.AF_UNIX

    def server_bind(self):
        self.socket.bind(self.server_address)
        self.server_name, self.server_port = "localhost", 0


def test_the_smoke_check_talks_only_to_a_server_of_the_apps_account(tmp_path):
    path = str(tmp_path / "smoke.sock")
    server = UnixServer(path, Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert procs.wait_healthy(path, "r1", 1, peer_uid=os.getuid()) == (True, '{"status": "ok", "release": "r1"}')
        ok, said = procs.wait_healthy(path, "r1", 0.2, peer_uid=os.getuid() + 1)
        assert not ok and f"is served by uid {os.getuid()}, not by the app's account" in said
    finally:
        server.shutdown()
        server.server_close()


# --- the deploy lock: a stale one has one taker -------------------------------------------------

TAKER = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from host import releases
lock, go = Path(sys.argv[2]), Path(sys.argv[3])
(go.parent / f"ready.{os.getpid()}").touch()
while not go.exists():
    time.sleep(0.001)
refused = releases.take_lock(lock, {"who": "taker", "pid": str(os.getpid())})
print("won" if refused is None else "lost: " + refused, flush=True)
while refused is None and not (go.parent / "end").exists():
    time.sleep(0.01)  # a live holder until every taker has tried (none may find it stale)
"""


def dead_pid() -> str:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return str(proc.pid)


def test_of_many_takers_of_a_stale_lock_exactly_one_wins(tmp_path):
    lock, go = tmp_path / ".deploy.lock", tmp_path / "go"
    assert releases.take_lock(lock, {"who": "bob@crashed", "pid": dead_pid()}) is None
    # The takers run as "remote.sh" (a live host program to holder_alive), all let go at once.
    takers = [subprocess.Popen([sys.executable, "-c", TAKER, str(DEPLOY), str(lock), str(go), "remote.sh"],
                               stdout=subprocess.PIPE, text=True) for _ in range(5)]
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("ready.*"))) < len(takers) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    said = [taker.stdout.readline().strip() for taker in takers]  # "taking over …", then the result
    said = [line if line.startswith(("won", "lost")) else line + " " + taker.stdout.readline().strip()
            for line, taker in zip(said, takers)]
    (tmp_path / "end").touch()
    for taker in takers:
        taker.wait(30)
    assert sum(line.endswith("won") for line in said) == 1, said
    assert all(line.endswith("won") or "another deploy" in line for line in said), said


def test_a_taker_that_died_mid_takeover_blocks_no_one(tmp_path):
    """The takeover is an flock: the kernel drops it with its holder (a mkdir would stay)."""
    lock = tmp_path / ".deploy.lock"
    releases.take_lock(lock, {"who": "bob@crashed", "pid": dead_pid()})
    hold = "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); print(1, flush=True); time.sleep(30)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path / ".deploy.lock.flock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        holder.stdout.readline()
        refused = releases.take_lock(lock, {"who": "ann", "pid": dead_pid()})
        assert refused == f"another deploy is taking over the stale lock on {tmp_path} just now"
        assert releases.lock_info(lock)["who"] == "bob@crashed"
    finally:
        holder.kill()
        holder.wait()
    assert releases.take_lock(lock, {"who": "ann", "pid": dead_pid()}) is None
    assert releases.lock_info(lock)["who"] == "ann"


def test_the_host_refuses_keeping_no_release():
    with pytest.raises(context.Failure, match="KEEP_RELEASES must be at least 1"):
        context.Settings.from_environment({"APP_DIR": "/srv/x", "KEEP_RELEASES": "0"})
