"""Several hosts, for real: rolling deploys (REMOTE_HOSTS, BATCH) to three network-namespace
hosts, each with its own address, sshd and private deploy directory (harness/netns.py), and
nginx from the distribution balancing across them with the file `make nginx-conf` writes.

Root only (namespaces); skipped with the reason elsewhere (failed in CI). Traffic stays on loopback and on
the tests' own bridge (10.213.0.0/24). Tests run in file order on one set of hosts: each
leaves every host serving. The module's teardown removes the namespaces, bridge, mounts
and every process in them, also after a failure.
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest
from conftest import bake, missing
from harness.app import Fleet, make, output, port_open, table, targets, tree
from harness.load import Load
from harness.netns import NamespaceHosts, unavailable
from harness.sshd import free_port, python_host_env
from harness.venvs import make_venv


PORT = 8000  # every host has a network of its own: the same port on each
WEB1_PYTHON = "3.12"  # web1's python3; web2 and web3 run this machine's
TIMINGS: list[str] = []


# --- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    reason = unavailable()
    if reason:
        missing(f"several-hosts tests: {reason}")
    hosts = NamespaceHosts(tmp_path_factory.mktemp("hosts"), count=3, login_env={0: python_host_env(WEB1_PYTHON)})
    with hosts:
        yield hosts
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [h.netns for h in hosts if h.netns in left], f"namespaces left behind: {left}"
    assert not [h for h in hosts if h.pids()], "processes left in the namespaces"
    if TIMINGS:
        print("\n" + "\n".join(TIMINGS))


@pytest.fixture(scope="module")
def fleet(hosts, tmp_path_factory) -> Fleet:  # hosts first: skip before baking
    # database=none: a SQLite project refuses several hosts (each would have its own data)
    project = bake(tmp_path_factory.mktemp("fleet-bake"), database="none")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    make_venv(project, tmp_path_factory)
    return Fleet(project, hosts, port=PORT, timings=TIMINGS)


@pytest.fixture(scope="module")
def first_rollout(fleet):
    """The first deploy to all three hosts, one at a time."""
    return fleet.deploy("first deploy, BATCH=1")


# --- rolling deploys --------------------------------------------------------------------


def test_rollout_deploys_every_host_in_turn(fleet, first_rollout):
    result, rows, _ = first_rollout
    assert result.returncode == 0, output(result)
    assert list(rows) == ["web1", "web2", "web3"], result.stdout
    for index, host in enumerate(fleet.hosts):
        _, old, new, state, seconds = rows[host.alias]
        assert (old, state) == ("none", "deployed"), rows
        assert new == fleet.current(index) == fleet.serving(index), host.alias
        assert seconds.endswith("s")
    # One host after the other: web2's output starts after web1's deploy is done.
    out = result.stdout
    assert out.index("[web1] deployed") < out.index("[web2]") < out.index("[web2] deployed") < out.index("[web3]")
    assert out.count("  pack: ") == 1 and out.count("  test: ") == 1, "packed and tested once"
    # web1 runs another Python: it got a release of its own, web2 and web3 share one.
    local = subprocess.run(["python3", "deploy/target.py", "local"], cwd=fleet.project, check=True,
                           capture_output=True, text=True).stdout.strip()
    web1 = local.replace(local.split("-")[0], "cp" + WEB1_PYTHON.replace(".", ""), 1)
    assert targets(result) == {"web1": web1, "web2": local, "web3": local}, result.stdout
    assert "(2 release(s) for 2 target(s))" in out
    local_python = "3." + local.split("-")[0][3:]  # cp311 -> 3.11
    for index, expected in enumerate([WEB1_PYTHON, local_python, local_python]):
        cfg = (fleet.hosts[index].dir / "current" / "venv" / "pyvenv.cfg").read_text()
        assert re.search(rf"^version(_info)? = {re.escape(expected)}\.", cfg, re.M), (index, cfg)
    # The release carries static/ for nginx, checked like every other file.
    release = fleet.hosts[0].dir / "current"
    assert (release / "static" / "style.css").read_bytes() == \
        (fleet.project / "src" / "my_flask_app" / "static" / "style.css").read_bytes()
    assert "  static/style.css\n" in (release / "SHA256SUMS").read_text()


def test_host_targets_report_per_host(fleet, first_rollout):
    status = fleet.make("status")
    headers = re.findall(r"^==> (\S+)$", status.stdout, re.M)
    assert headers == ["web1", "web2", "web3"], status.stdout
    assert status.stdout.count("healthz: {") == 3
    releases = fleet.make("releases")
    for index in range(3):
        assert f"* {fleet.current(index)} (current)" in releases.stdout

    fleet.make("stop", REMOTE_HOSTS="web3")  # a list of one host is fine too
    try:
        status = fleet.make("status", check=False)
        assert status.returncode != 0
        assert "master: not running" in status.stdout
        assert "failed on web3 (ok on web1 web2)" in status.stderr, output(status)
    finally:
        start = fleet.make("start")
    assert "started release" in start.stdout and start.stdout.count("already running") == 2
    assert fleet.serving(2) == fleet.current(2)
    logs = fleet.make("logs", LINES="3")
    assert re.findall(r"^==> (\S+)$", logs.stdout, re.M) == ["web1", "web2", "web3"]
    restart = fleet.make("restart", REMOTE_HOSTS="web1 web2")
    assert restart.stdout.count("handover: ") == 2, restart.stdout
    assert fleet.make("unlock").stdout.count("no deploy lock held") == 3


def files(root) -> dict:
    """What a host holds, less what its running app writes itself (logs, bytecode)."""
    return {p: s for p, s in tree(root).items() if "__pycache__" not in p and not p.startswith("shared/log")}


def test_a_plan_asks_every_host_and_changes_none(fleet, first_rollout):
    before = [files(host.dir) for host in fleet.hosts.hosts]
    planned = fleet.make("plan")
    assert re.findall(r"^--- (\S+) \(", planned.stdout, re.M) == ["web1", "web2", "web3"], planned.stdout
    for index in range(3):
        assert f"  now: {fleet.current(index)}" in planned.stdout
    assert planned.stdout.rstrip().endswith("plan: the deploy would go ahead")
    assert [files(host.dir) for host in fleet.hosts.hosts] == before


def test_exec_and_config_show_run_on_every_host(fleet, first_rollout):
    ran = fleet.make("exec", CMD='echo "ran in $PWD as $MY_FLASK_APP_ENV"')
    assert re.findall(r"^==> (\S+)$", ran.stdout, re.M) == ["web1", "web2", "web3"], ran.stdout
    for index in range(3):  # every host sees its own directory at the same REMOTE_DIR
        assert f"ran in {fleet.hosts.remote_dir}/releases/{fleet.current(index)} as prod" in ran.stdout, ran.stdout
    failed = fleet.make("exec", check=False, CMD="test -e /no/such/file")
    assert failed.returncode != 0 and "failed on web1" in failed.stderr, output(failed)
    shown = fleet.make("config-show")
    assert re.findall(r"^==> (\S+)$", shown.stdout, re.M) == ["web1", "web2", "web3"], shown.stdout
    assert shown.stdout.count("secret_key = ******** (secret)") == 3, shown.stdout


def test_deploy_hosts_from_the_ini_and_an_explicit_remote_host(fleet, first_rollout):
    """[deploy] hosts is the default list; REMOTE_HOST=… on the command line picks one host."""
    prod = fleet.project / "config" / "prod.ini"
    saved = prod.read_text()
    prod.write_text(saved + f"\n[deploy]\nhosts = {fleet.hosts.aliases}\n")
    try:
        common = dict(SSH_OPTS=fleet.hosts.ssh_opts, REMOTE_DIR=str(fleet.hosts.remote_dir), PORT=str(PORT))
        every = make(fleet.project, "releases", **common)
        one = make(fleet.project, "status", REMOTE_HOST="web2", **common)
    finally:
        prod.write_text(saved)
    assert re.findall(r"^==> (\S+)$", every.stdout, re.M) == ["web1", "web2", "web3"]
    assert "==>" not in one.stdout and f"release: {fleet.current(1)}" in one.stdout


def test_a_held_lock_stops_the_rollout_before_anything_changes(fleet, first_rollout):
    """A rollout never runs twice at once on a host: the host's own lock refuses the second."""
    lock = fleet.hosts[0].dir / ".deploy.lock"
    lock.mkdir()
    (lock / "info").write_text("who=someone@elsewhere\nwhen=now\nversion=0.1.0\n")
    before = [fleet.current(i) for i in range(3)]
    try:
        result, rows, _ = fleet.deploy("web1 locked", check=False)
    finally:
        shutil.rmtree(lock)
    assert result.returncode != 0
    assert "another deploy holds the lock" in output(result)
    assert [rows[h][3] for h in ("web1", "web2", "web3")] == ["FAILED", "not reached", "not reached"]
    assert [fleet.current(i) for i in range(3)] == before == [fleet.serving(i) for i in range(3)]


def test_a_host_that_refuses_the_release_stops_the_rollout(fleet, first_rollout):
    """web2's host-local config has a key the release rejects: its smoke boot fails there only."""
    local_ini = fleet.hosts[1].dir / "shared" / "local.ini"
    saved = local_ini.read_text()
    local_ini.write_text(saved + "log_levle = DEBUG\n")  # a typo, on this host only
    before = [fleet.current(i) for i in range(3)]
    try:
        result, rows, _ = fleet.deploy("web2 refuses", check=False)
    finally:
        local_ini.write_text(saved)
    assert result.returncode != 0, output(result)
    web1, web2, web3 = rows["web1"], rows["web2"], rows["web3"]
    # web1: the new release, serving.
    assert web1[1] == before[0] and web1[3] == "deployed" and web1[2] != before[0]
    assert fleet.current(0) == fleet.serving(0) == web1[2]
    # web2: refused at the smoke boot, never switched; the old release keeps serving.
    assert web2[1:4] == (before[1], before[1], "FAILED"), web2
    assert fleet.current(1) == fleet.serving(1) == before[1]
    assert "unknown key 'log_levle'" in result.stdout and "failed its smoke boot" in result.stderr
    # web3: never reached, untouched.
    assert web3[1:5] == (before[2], before[2], "not reached", "-"), web3
    assert fleet.current(2) == fleet.serving(2) == before[2]
    assert "rollout stopped at web2: new release on web1; old release kept on web2 web3" in result.stderr


def test_rollback_reports_each_host(fleet, first_rollout):
    was = fleet.current(0)
    result = fleet.make("rollback", REMOTE_HOSTS="web1")
    row = table(result)["web1"]
    assert row[1] == was and row[3] == "rolled back" and row[2] != was
    assert fleet.current(0) == fleet.serving(0) == row[2]


def test_batch_deploys_hosts_side_by_side(fleet, first_rollout):
    result, rows, _ = fleet.deploy("BATCH=3", BATCH="3")
    assert result.returncode == 0, output(result)
    assert [rows[h][3] for h in ("web1", "web2", "web3")] == ["deployed"] * 3
    # Side by side: the rollout took less than its hosts' deploys one after the other.
    total = float(re.search(r"==> rollout summary \((\d+\.\d+)s\)", result.stdout).group(1))
    assert total < 0.8 * sum(float(rows[h][4][:-1]) for h in rows), result.stdout
    for index in range(3):
        assert fleet.current(index) == fleet.serving(index) == rows[f"web{index + 1}"][2]


# --- nginx -------------------------------------------------------------------------------


def test_the_release_command_runs_once_on_the_first_host_before_any_switch(fleet, first_rollout):
    """[deploy] release_command (migrations) in a three-host rollout: once, on web1, which
    deploys alone first; web2 and web3 skip it. Each run appends its host's release."""
    prod = fleet.project / "config" / "prod.ini"
    saved = prod.read_text()
    command = "echo \"$(basename $PWD)\" >>$MY_FLASK_APP_SHARED_DIR/release-command.log"
    prod.write_text(saved + f"\n[deploy]\nrelease_command = sh -c '{command}'\n")
    try:
        result, rows, _ = fleet.deploy("release_command, BATCH=3", BATCH="3")
    finally:
        prod.write_text(saved)
    assert result.returncode == 0, output(result)
    logs = [h.dir / "shared" / "release-command.log" for h in fleet.hosts]
    assert logs[0].read_text().split() == [rows["web1"][2]]  # once, in web1's new release
    assert not logs[1].exists() and not logs[2].exists()
    assert result.stdout.count("release_command: not here (it ran on the first host)") == 2
    # web1 finished (its release command included) before web2 and web3 began
    assert result.stdout.index("[web1] deployed") < result.stdout.index("[web2]")
    for index in range(3):
        assert fleet.current(index) == fleet.serving(index) == rows[f"web{index + 1}"][2]


def test_nginx_conf_for_a_single_host(fleet, first_rollout):
    """One host, and REMOTE_DIR relative to the remote user's home (asked from the host)."""
    result = make(fleet.project, "nginx-conf", REMOTE_HOST="web2", SSH_OPTS=fleet.hosts.ssh_opts,
                  REMOTE_DIR="apps/demo", PORT=str(PORT))
    conf = (fleet.project / "build" / "nginx" / "my-flask-app.conf").read_text()
    assert re.findall(r"^\s*server (\S+) ", conf, re.M) == [f"{fleet.hosts[1].address}:{PORT}"], conf
    home = fleet.hosts[1].sshd.run("cd && pwd -P", check=True).stdout.strip()
    assert f"alias {home}/apps/demo/current/static/;" in conf
    assert "listen 80;" in conf and "wrote build/nginx/my-flask-app.conf" in result.stdout


@pytest.fixture()
def nginx(fleet, tmp_path):
    """Debian's nginx on 127.0.0.1:<free port>, with the generated file included."""
    binary = shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/usr/bin")
    if binary is None:
        missing("nginx is not installed: apt-get install nginx-light")
    port = free_port()
    # nginx runs on one machine: it serves static files from web1's directory.
    fleet.make("nginx-conf", NGINX_PORT=f"127.0.0.1:{port}",
               STATIC_ROOT=f"{fleet.hosts[0].dir}/current/static/")
    snippet = fleet.project / "build" / "nginx" / "my-flask-app.conf"
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(f"""daemon off;
user root;  # the tests' files are in root's private tmp
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    types {{ text/css css; text/html html; application/json json; }}
    log_format upstreams '$request $status upstream=$upstream_addr';
    access_log {prefix}/access.log upstreams;
    include {snippet};
}}
""")
    base = [binary, "-p", f"{prefix}/", "-e", f"{prefix}/error.log", "-c", str(conf)]
    checked = subprocess.run([*base, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen(base, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not port_open(port):
            assert proc.poll() is None and time.monotonic() < deadline, (prefix / "error.log").read_text()
            time.sleep(0.05)
        yield port, snippet.read_text(), prefix / "access.log"
    finally:
        proc.send_signal(signal.SIGQUIT)  # graceful: workers finish what they serve
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.status, response.read()


def test_nginx_balances_serves_static_and_keeps_answering_during_a_rollout(fleet, nginx):
    port, conf, access_log = nginx
    addresses = [f"{h.address}:{PORT}" for h in fleet.hosts]
    assert re.findall(r"^\s*server (\S+) max_fails=\d+ fail_timeout=\S+;", conf, re.M) == addresses
    for line in ("proxy_next_upstream error timeout http_502 http_503 http_504;",
                 "proxy_set_header Host $host;", "proxy_set_header X-Real-IP $remote_addr;",
                 "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                 "proxy_set_header X-Forwarded-Proto $scheme;"):
        assert line in conf

    # Balanced: every host answers some of the requests.
    for _ in range(12):
        assert get(port, "/")[0] == 200
    def logged(pattern: str) -> list[str]:  # nginx logs a request just after answering it
        deadline = time.monotonic() + 5
        while not (found := re.findall(pattern, access_log.read_text(), re.M)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    logged(r"^GET / \S+ 200 upstream=(\S+)$")
    time.sleep(0.2)
    upstreams = re.findall(r"^GET / \S+ 200 upstream=(\S+)$", access_log.read_text(), re.M)
    assert sorted(set(upstreams)) == addresses, upstreams
    # Static files: nginx reads them from disk; no gunicorn sees the request.
    status, body = get(port, "/static/style.css")
    assert status == 200
    assert body == (fleet.project / "src" / "my_flask_app" / "static" / "style.css").read_bytes()
    assert logged(r"^GET /static/style.css \S+ 200 upstream=-$")
    for host in fleet.hosts:
        assert "/static/" not in (host.dir / "shared" / "log" / "access.log").read_text()

    # A rolling deploy under load: 8 clients on 127.0.0.1 through nginx, none fails. Each
    # pauses between requests: flat out, they, nginx and three hosts' gunicorns saturate a
    # 2-CPU machine and the deploy crawls.
    before = [fleet.current(i) for i in range(3)]
    with Load(port, threads=8, max_seconds=180, pause=0.05) as load:
        load.wait_for(ok=50)
        result, rows, wall = fleet.deploy("under load through nginx, BATCH=1", check=False)
        served = load.ok
        time.sleep(1)  # traffic after the last hand-over too
        assert load.ok > served, "the load had stopped before the rollout ended"
    TIMINGS.append(f"load through nginx during the rollout: {load.summary()}")
    print(TIMINGS[-1])
    assert result.returncode == 0, output(result)
    assert load.failed == 0, load.summary()
    after = [fleet.current(i) for i in range(3)]
    assert all(a != b for a, b in zip(after, before)), (before, after)
    assert [fleet.serving(i) for i in range(3)] == after
    assert set(after) <= load.releases_seen, load.summary()
