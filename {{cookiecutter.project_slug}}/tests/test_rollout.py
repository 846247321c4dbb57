"""deploy/rollout.py and deploy/nginx_conf.py with a fake make: no ssh, no host, no make.

FakeMake stands in for rollout.Make, which runs `make <target> REMOTE_HOST=h`: it answers
as the Makefile's targets would and records every call.
"""
import importlib.util
import re
import sys
import threading
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parents[1] / "deploy"


def load(name):
    spec = importlib.util.spec_from_file_location(name, DEPLOY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name; rollout imports nginx_conf
    spec.loader.exec_module(module)
    return module


nginx_conf = load("nginx_conf")
rollout = load("rollout")
Host = rollout.Host

OLD = "0.1.0-20250101T120000Z"
NEW = "0.2.0-20250102T090000Z"
TARGETS = {"web1": "cp312-manylinux_2_39_x86_64", "web2": "cp311-manylinux_2_36_x86_64",
           "web3": "cp311-manylinux_2_36_x86_64", "web4": "cp312-manylinux_2_39_x86_64"}


class FakeMake(rollout.Make):
    """The Makefile's targets as a rollout sees them. fail: hosts whose host-deploy fails;
    switched: those of them left on the new release (failed after the switch)."""

    def __init__(self, fail=(), switched=(), unreachable=(), pack_fails=False):
        super().__init__("make")
        self.fail, self.switched, self.unreachable, self.pack_fails = set(fail), set(switched), set(unreachable), pack_fails
        self.current_release = {}
        self.calls = []  # (target, host, variables)
        self._lock = threading.Lock()

    def deployed(self, target):
        return [host for t, host, _ in self.calls if t == target]

    def run(self, target, host=None, prefix=None, quiet=False, **variables):
        with self._lock:
            self.calls.append((target, host, variables))
        if host in self.unreachable:
            return 1, "ssh: connect to host: Connection refused\nerror: cannot reach it over ssh (see above); nothing was changed\n"
        if target == "releases":
            return 0, f"  0.0.9-20241201T000000Z\n* {self.current_release.get(host, OLD)} (current)\n"
        if target == "host-target":
            return 0, TARGETS[host] + "\n"
        if target == "pack":
            if self.pack_fails:
                return 2, "error: no wheel of something\n"
            Path(variables["PACKED"]).parent.mkdir(parents=True, exist_ok=True)
            Path(variables["PACKED"]).write_text(
                "".join(f"{t} build/app-0.2.0-{t}.tar.gz\n" for t in variables["PACK_TARGET"].split()))
            return 0, ""
        if target == "host-deploy":
            if host in self.fail:
                if host in self.switched:
                    self.current_release[host] = NEW
                return 1, "  install: 1.000s\nerror: release failed its smoke boot\n"
            self.current_release[host] = NEW
            return 0, "  host: 2.000s\n"
        return 0, ""  # check-config, test, remote-vars


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # build/rollout-packed.txt is relative


def hosts(*names):
    return [Host(name) for name in names]


def rows(output):
    """The summary table: its header, then host -> (target, old, new, result, time)."""
    lines = [line for line in output.splitlines() if re.match(r"  (host|web\d) ", line)]
    header = lines[0].split()
    return header, {line.split()[0]: tuple(re.split(r"\s{2,}", line.strip())[1:]) for line in lines[1:]}


# --- parse_hosts ---------------------------------------------------------------------


@pytest.mark.parametrize("given, expected", [
    ("web1 web2", ["web1", "web2"]),
    ("web1,web2, web3", ["web1", "web2", "web3"]),
    ("  web1\tweb2 ,", ["web1", "web2"]),
    ("deploy@10.0.0.5 [fe80::1] db-1.example.com:22", ["deploy@10.0.0.5", "[fe80::1]", "db-1.example.com:22"]),
    ("", []),
])
def test_parse_hosts(given, expected):
    assert rollout.parse_hosts(given) == expected


@pytest.mark.parametrize("given, words", [
    ("web1 web2 web1", ["web1 more than once"]),
    ("web1,web1", ["web1 more than once"]),
    ("web1 we;b2", ["we;b2 is not a host name"]),
    ("web1 ../etc", ["../etc is not a host name"]),
    ("web1 $(reboot)", ["is not a host name"]),
])
def test_parse_hosts_refuses(given, words):
    with pytest.raises(SystemExit) as refused:
        rollout.parse_hosts(given)
    assert all(word in str(refused.value) for word in words), refused.value


# --- pack_for_hosts -------------------------------------------------------------------


def test_pack_for_hosts_packs_once_per_target_and_hands_each_host_its_tarball(capsys):
    make, group = FakeMake(), hosts("web1", "web2", "web3", "web4")
    assert rollout.pack_for_hosts(make, group)
    assert sorted(make.deployed("host-target")) == ["web1", "web2", "web3", "web4"]
    packs = [variables for target, _, variables in make.calls if target == "pack"]
    assert packs == [{"PACK_TARGET": "cp311-manylinux_2_36_x86_64 cp312-manylinux_2_39_x86_64",
                      "PACKED": "build/rollout-packed.txt"}]
    for host in group:
        assert host.target == TARGETS[host.name]
        assert host.release == f"build/app-0.2.0-{TARGETS[host.name]}.tar.gz"
    assert re.search(r"^  pack: \d+\.\d{3}s \(2 release\(s\) for 2 target\(s\)\)$", capsys.readouterr().out, re.MULTILINE)


def test_pack_for_hosts_stops_at_a_host_it_cannot_ask(capsys):
    make = FakeMake(unreachable={"web2"})
    assert not rollout.pack_for_hosts(make, hosts("web1", "web2"))
    assert "pack" not in [target for target, _, _ in make.calls]
    assert "error: web2: cannot reach it over ssh" in capsys.readouterr().err


def test_a_failed_pack_touches_no_host(capsys):
    make = FakeMake(pack_fails=True)
    assert rollout.deploy(make, hosts("web1", "web2"), 1, "app") == 1
    assert make.deployed("host-deploy") == []
    assert "make pack failed; no host was touched" in capsys.readouterr().err


# --- deploy: stop at the first failure --------------------------------------------------


def test_deploy_to_every_host(capsys):
    make, group = FakeMake(), hosts("web1", "web2", "web3")
    assert rollout.deploy(make, group, 1, "app 0.2.0") == 0
    assert make.deployed("host-deploy") == ["web1", "web2", "web3"]
    out = capsys.readouterr().out
    assert out.count("  check-config: ") == 1 and out.count("  test: ") == 1 and out.count("  pack: ") == 1
    for step in ("check-config", "test", "pack"):
        assert re.search("^  " + step + r": \d+\.\d\d\ds( |$)", out, re.MULTILINE), out
    _, table = rows(out)
    assert {h: row[1:4] for h, row in table.items()} == {h: (OLD, NEW, "deployed") for h in ("web1", "web2", "web3")}
    assert "deployed to all 3 hosts" in out


def test_deploy_stops_at_the_first_failing_host(capsys):
    make, group = FakeMake(fail={"web2"}), hosts("web1", "web2", "web3", "web4")
    assert rollout.deploy(make, group, 1, "app") == 1
    assert make.deployed("host-deploy") == ["web1", "web2"]
    assert [h.result for h in group] == ["deployed", "FAILED", "not reached", "not reached"]
    captured = capsys.readouterr()
    _, table = rows(captured.out)
    assert table["web2"][1:4] == (OLD, OLD, "FAILED")
    assert table["web3"] == (TARGETS["web3"], OLD, OLD, "not reached", "-")
    assert "error: web2: release failed its smoke boot" in captured.err
    assert "rollout stopped at web2: new release on web1; old release kept on web2 web3 web4" in captured.err


def test_deploy_stops_after_the_batch_with_a_failing_host(capsys):
    make, group = FakeMake(fail={"web2"}), hosts("web1", "web2", "web3", "web4")
    assert rollout.deploy(make, group, 2, "app") == 1
    assert sorted(make.deployed("host-deploy")) == ["web1", "web2"]  # the whole first batch ran
    assert [h.result for h in group] == ["deployed", "FAILED", "not reached", "not reached"]
    assert "old release kept on web2 web3 web4" in capsys.readouterr().err


def test_a_failing_first_host_stops_the_rollout_at_once(capsys):
    make, group = FakeMake(fail={"web1"}), hosts("web1", "web2")
    assert rollout.deploy(make, group, 1, "app") == 1
    assert make.deployed("host-deploy") == ["web1"]
    assert "new release on no host; old release kept on web1 web2" in capsys.readouterr().err


def test_a_host_left_on_the_new_release_is_to_check(capsys):
    make, group = FakeMake(fail={"web1"}, switched={"web1"}), hosts("web1", "web2")
    assert rollout.deploy(make, group, 1, "app") == 1
    assert group[0].result == "FAILED, check it" and group[0].new == NEW


def test_a_host_that_cannot_be_asked_stops_the_deploy_before_any_change(capsys):
    make = FakeMake(unreachable={"web3"})
    assert rollout.deploy(make, hosts("web1", "web2", "web3"), 1, "app") == 1
    assert [t for t, _, _ in make.calls if t not in ("releases",)] == []
    assert "cannot ask web3 for its current release" in capsys.readouterr().err


# --- the summary table ------------------------------------------------------------------


def test_summary_table_columns():
    group = [Host("web1", "cp312-manylinux_2_39_x86_64", old=OLD, new=NEW, result="deployed", seconds=8.64),
             Host("web-long-name", old=OLD, new=OLD)]
    lines = rollout.table(group, "old release", "new release").splitlines()
    assert re.split(r"\s{2,}", lines[0].strip()) == ["host", "target", "old release", "new release", "result", "time"]
    assert re.split(r"\s{2,}", lines[1].strip()) == ["web1", "cp312-manylinux_2_39_x86_64", OLD, NEW, "deployed", "8.6s"]
    assert re.split(r"\s{2,}", lines[2].strip()) == ["web-long-name", "-", OLD, OLD, "not reached", "-"]
    # columns line up: every cell starts where its header does
    starts = [lines[0].index(word) for word in ("target", "old release", "new release", "result", "time")]
    assert [lines[1].index(cell) for cell in ("cp312", OLD, NEW, "deployed", "8.6s")] == starts


# --- the commands, from the host program's registry ---------------------------------------


def test_host_commands_are_the_registrys_make_targets():
    from host.cli import COMMANDS

    assert rollout.HOST_COMMANDS and "status" in rollout.HOST_COMMANDS
    assert set(rollout.HOST_COMMANDS) == {name for name, cmd in COMMANDS.items() if cmd.target}
    for command in rollout.HOST_COMMANDS:
        assert command in rollout.COMMANDS
    # with targets of their own in the Makefile (a hook to run, a command to pass)
    assert {"deploy", "copy", "rollback", "exec", "config-show", "nginx-conf"} <= set(rollout.COMMANDS)


# --- nginx_conf ---------------------------------------------------------------------------


def test_nginx_conf_has_every_host_and_the_static_root():
    text = nginx_conf.render("my-app", ["10.0.0.1", "fe80::1", "web3"], "8000", "80", "/srv/app/current/static/")
    assert "upstream my_app {" in text and "proxy_pass http://my_app;" in text
    servers = re.findall(r"^    server (\S+) max_fails=3 fail_timeout=10s;$", text, re.MULTILINE)
    assert servers == ["10.0.0.1:8000", "[fe80::1]:8000", "web3:8000"]
    assert "    listen 80;" in text and "        alias /srv/app/current/static/;" in text
    assert "proxy_set_header Host $host;" in text


@pytest.mark.parametrize("given, remote_dir, home, expected", [
    ("", "/srv/app", "", "/srv/app/current/static/"),
    ("", "apps/app/", "/home/deploy/", "/home/deploy/apps/app/current/static/"),
    ("/var/www/static", "apps/app", "", "/var/www/static/"),
])
def test_nginx_static_root(given, remote_dir, home, expected):
    assert nginx_conf.static_root(given, remote_dir, home) == expected


@pytest.mark.parametrize("listen, ok", [("80", True), ("127.0.0.1:8080", True), ("[::1]:80", True),
                                        ("eighty", False), ("80; evil", False)])
def test_nginx_listen(listen, ok):
    assert bool(nginx_conf.LISTEN.fullmatch(listen)) == ok


def test_nginx_conf_target_writes_the_file(tmp_path, capsys):
    class Addresses(FakeMake):
        def run(self, target, host=None, prefix=None, quiet=False, **variables):
            if target == "host-address":
                return 0, {"web1": "10.0.0.1", "web2": "fe80::2"}[host] + "\n"
            if target == "host-home":
                return 0, "/home/deploy\n"
            return super().run(target, host, prefix, quiet, **variables)

    args = rollout.argparse.Namespace(out=str(tmp_path / "nginx" / "app.conf"), name="app", port="8000",
                                      nginx_port="80", static_root="", remote_dir="apps/app",
                                      max_fails=3, fail_timeout="10s")
    assert rollout.write_nginx_conf(Addresses(), hosts("web1", "web2"), args) == 0
    text = (tmp_path / "nginx" / "app.conf").read_text()
    assert "server [fe80::2]:8000 " in text and "alias /home/deploy/apps/app/current/static/;" in text
    assert "upstream 10.0.0.1:8000, [fe80::2]:8000" in capsys.readouterr().out
