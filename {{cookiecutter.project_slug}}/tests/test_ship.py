"""The deploy program's pure parts (deploy/ship/): its ssh and scp commands, tested as
strings; settings read once; batches and the result table. Real deploys: the template's
tests (real sshd, namespace hosts, booted servers)."""
import configparser
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).parents[1]
sys.path.insert(0, str(PROJECT / "deploy"))

import nginx_conf
from ship import fleet, local{{ ', plan' if cookiecutter.database != 'none' }}
from ship.messages import ShipError
from ship.remote import Remote
from ship.settings import Project, parse_hosts, read

APP = Project("app", "0.2.0", "{{ cookiecutter.package_name }}", "{{ cookiecutter.python_version }}")


# [deploy] as the template bakes it: the host, user and directory you give in config/ do not
# change what these tests expect.
BAKED_DEPLOY = {"host": "", "hosts": "", "user": "", "dir": "apps/{{ cookiecutter.project_slug }}", "ssh_port": "",
                "keep_releases": "5", "log_max_size": "50M"}


@pytest.fixture()
def settings(monkeypatch, tmp_path):
    """A project of the baked settings: src/ is this one's, config/ its base.ini with
    BAKED_DEPLOY and an empty prod.ini; ssh's configuration logs in as deploy (whoever runs
    the tests: a relative REMOTE_DIR of root's would be under /srv)."""
    base = configparser.ConfigParser(interpolation=None)
    base.read(PROJECT / "config" / "base.ini")
    base["deploy"].update(BAKED_DEPLOY)
    (tmp_path / "config").mkdir()
    with open(tmp_path / "config" / "base.ini", "w") as out:
        base.write(out)
    (tmp_path / "config" / "prod.ini").write_text("")
    (tmp_path / "src").symlink_to(PROJECT / "src")
    monkeypatch.chdir(tmp_path)  # config/ and src/ are relative, as under make
    for name in list(os.environ):
        if name.startswith("{{ cookiecutter.package_name | upper }}_"):
            monkeypatch.delenv(name)

    (tmp_path / "ssh_config").write_text("Host *\n  User deploy\n")

    def given(**variables):
        return read(APP, {"REMOTE_HOST": "web1", "SSH_OPTS": f"-F {tmp_path / 'ssh_config'}", **variables}, "deploy")
    return given


def test_the_ini_fills_in_what_make_was_not_given(settings):
    s = settings()
    assert s["APP_ENV"] == "prod" and s["REMOTE_HOST"] == "web1" and s["LINES"] == "100"
    assert s["REMOTE_DIR"] == "apps/{{ cookiecutter.project_slug }}" and s["KEEP_RELEASES"] == "5"
    assert s["LOG_MAX_KB"] == "51200" and s["SSH_PORT"] == "" and s["PORT"].isdigit()
    assert settings(PORT="9001", KEEP_RELEASES="2")["PORT"] == "9001"


@pytest.mark.parametrize("variables, words", [
    ({"REMOTE_HOST": "-oProxyCommand=x"}, "REMOTE_HOST must be"),
    ({"REMOTE_HOST": "x;touch /tmp/p"}, "REMOTE_HOST must be"),
    ({"PORT": "80 -o x"}, "PORT must be a number"),
    ({"LINES": "1;reboot"}, "LINES must be a number"),
    ({"APP_ENV": "../etc"}, "APP_ENV must be"),
    ({"REMOTE_HOSTS": "web1 web1"}, "web1 more than once"),
    ({"REMOTE_HOSTS": "web1 we;b2"}, "REMOTE_HOST must be"),
])
def test_bad_variables_are_refused_by_name(settings, variables, words):
    with pytest.raises(ShipError) as refused:
        settings(**variables)
    assert words in str(refused.value) and refused.value.status == 2


def test_parse_hosts():
    assert parse_hosts("web1, web2 web3") == ["web1", "web2", "web3"] and parse_hosts("") == []


def remote(settings, **variables):
    return Remote(settings(**variables), "web1", "me@laptop")


def test_roots_relative_directory_is_under_srv_whether_given_or_from_ssh_config(settings, tmp_path):
    assert remote(settings).dir == "apps/{{ cookiecutter.project_slug }}"  # deploy's: under its home
    as_root = remote(settings, REMOTE_USER="root").scp(Path("r.tar.gz"), "r-1.tar.gz")
    assert as_root[-1] == "root@web1:/srv/apps/{{ cookiecutter.project_slug }}/.incoming/r-1.tar.gz"
    (tmp_path / "root_config").write_text("Host web1\n  User root\n")
    assert remote(settings, SSH_OPTS=f"-F {tmp_path / 'root_config'}").dir == "/srv/apps/{{ cookiecutter.project_slug }}"
    assert remote(settings, REMOTE_USER="root", REMOTE_DIR="/opt/app").dir == "/opt/app"


def test_ssh_keeps_host_key_checking_and_ends_options_before_the_host(settings):
    argv = remote(settings, SSH_PORT="2222", SSH_OPTS="-i key -o UserKnownHostsFile=kh", REMOTE_USER="deploy").ssh("true")
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    assert argv[argv.index("-p") + 1] == "2222" and "StrictHostKeyChecking=no" not in argv
    assert argv[-3:] == ["--", "deploy@web1", "true"] and argv[argv.index("-i") + 1] == "key"


def test_scp_names_the_upload_in_incoming(settings):
    argv = remote(settings, SSH_PORT="2222").scp(Path("build/r.tar.gz"), "r-1.tar.gz")
    assert argv[:2] == ["scp", "-q"] and argv[argv.index("-P") + 1] == "2222"
    assert argv[-3:] == ["--", "build/r.tar.gz", "web1:apps/{{ cookiecutter.project_slug }}/.incoming/r-1.tar.gz"]


def test_the_shared_connection_lives_in_a_private_directory(settings):
    with remote(settings) as r:
        path = next(o for o in r.options() if o.startswith("ControlPath="))
        folder = Path(path.removeprefix("ControlPath=")).parent
        assert folder.is_dir() and os.stat(folder).st_mode & 0o777 == 0o700
    assert not folder.exists() and not any(o.startswith("ControlPath=") for o in r.options())


def test_the_host_line_runs_the_hosts_copy_only_when_it_is_ours(settings):
    r = remote(settings)
    line = r.line("status", (), send=False, report=False, sha="ab12")
    assert line.startswith('{ [ "$(sha256sum 2>/dev/null <apps/{{ cookiecutter.project_slug }}/remote.sh)" = \'ab12  -\' ] || exit 86; }')
    assert line.endswith("exec sh apps/{{ cookiecutter.project_slug }}/remote.sh status")
    sent = r.line("status", (), send=True, report=True, sha="ab12")
    assert "cat >apps/{{ cookiecutter.project_slug }}/.remote.sh.$$ && mv -f" in sent and "sha256sum" not in sent
    assert " REPORT=json " in sent


def test_values_reach_the_host_as_data(settings):
    """A value the checks let through still goes quoted, word by word."""
    line = remote(settings).line("exec", ("a b'c",), send=False, report=False, sha="0")
    words = shlex.split(line.split(" && ", 1)[1])
    assert words[-2:] == ["exec", "a b'c"] and "APP_ENV=prod" in words and "DEPLOY_WHO=me@laptop" in words
    assert "SKIP_RELEASE_COMMAND=1" in remote(settings).line("deploy", (), False, False, "0", {"SKIP_RELEASE_COMMAND": "1"})


def test_each_hosts_lean_upload_is_made_from_its_own_facts():
    command, out = local.lean_command(Path("build/app-0.2.0.tar.gz"), "web1")
    assert shlex.join(command) == (".venv/bin/python deploy/pack.py lean build/app-0.2.0.tar.gz "
                                   "build/hosts/web1.facts build/hosts/web1.upload.tar.gz")
    assert out == Path("build/hosts/web1.upload.tar.gz")


def test_a_lean_upload_that_cannot_be_made_ahead_is_left_to_the_send(tmp_path, monkeypatch):
    """No venv here, or pack.py failing: None, and send_release makes it, saying why."""
    monkeypatch.chdir(tmp_path)
    assert local.lean_all({"web1": tmp_path / "none.tar.gz"}) == {"web1": None}


def test_batches_and_the_first_host_alone_with_a_release_command():
    hosts = list("abcde")
    assert fleet.groups(hosts, 2, False) == [["a", "b"], ["c", "d"], ["e"]]
    assert fleet.groups(hosts, 2, True) == [["a"], ["b", "c"], ["d", "e"]]
    assert fleet.groups(hosts, 9, True) == [["a"], ["b", "c", "d", "e"]]


def test_summary_table_columns():
    h = fleet.Host("web1", None, target="cp312-manylinux_2_39_x86_64", old="0.1", new="0.2", result="deployed",
                   seconds=2.04)
    lines = fleet.table([h, fleet.Host("web22", None)], "old release", "new release").splitlines()
    assert lines[0].split() == ["host", "target", "old", "release", "new", "release", "result", "time"]
    assert lines[1].split() == ["web1", "cp312-manylinux_2_39_x86_64", "0.1", "0.2", "deployed", "2.0s"]
    assert lines[2].split() == ["web22", "-", "?", "?", "not", "reached", "-"]


{%- if cookiecutter.database != "none" %}
def test_pending_migrations_come_in_order_and_a_newer_schema_is_named():
    graph = {"0001": (), "0002": ("0001",), "0003": ("0002",)}
    assert plan.pending(graph, set()) == (["0001", "0002", "0003"], [])
    assert plan.pending(graph, {"0002"}) == (["0003"], [])
    assert plan.pending(graph, {"0003"}) == ([], [])
    assert plan.pending(graph, {"0009"}) == (["0001", "0002", "0003"], ["0009"])
    merged = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}
    assert plan.pending(merged, {"b"}) == (["c", "d"], [])


def test_the_projects_migrations_are_read_from_their_files(monkeypatch):
    monkeypatch.chdir(PROJECT)
    graph = plan.migrations("{{ cookiecutter.package_name }}")
    assert graph["0001"] == () and all(isinstance(parents, tuple) for parents in graph.values())
{%- endif %}


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




def test_several_hosts_tell_each_whether_it_runs_the_jobs(settings):
    s = settings(REMOTE_HOSTS="web1 web2")
    assert s.jobs_host == "web1"
    words = {name: shlex.split(Remote(s, name, "me@laptop").host_env(False)) for name in ("web1", "web2")}
    assert "JOBS=1" in words["web1"] and "JOBS=0" in words["web2"]
    assert not any(w.startswith("JOBS=") for w in shlex.split(remote(settings).host_env(False)))  # one host: its own
    assert "PROCESS=mail" in shlex.split(remote(settings, PROCESS="mail").host_env(False))


def test_a_jobs_host_that_is_not_one_of_the_hosts_is_refused(settings, monkeypatch):
    monkeypatch.setenv("{{ cookiecutter.package_name | upper }}_DEPLOY_JOBS_HOST", "web9")
    with pytest.raises(ShipError) as refused:
        settings(REMOTE_HOSTS="web1 web2")
    assert "[deploy] jobs_host of config/prod.ini is web9, which is not one of the hosts (web1 web2)" in str(refused.value)


# --- a deploy's tests, skipped for a tree that passed them (ship/tested.py) -----------------------


def test_a_tree_passed_once_is_known_until_any_file_git_sees_changes(tmp_path, monkeypatch):
    import subprocess

    from ship import tested
    monkeypatch.chdir(tmp_path)
    assert tested.tree_key() is None and not tested.passed_already(None)  # not a git work tree: always test
    subprocess.run(["git", "init", "-q"], check=True)
    (tmp_path / ".gitignore").write_text("build/\n")
    (tmp_path / "app.py").write_text("x = 1\n")
    key = tested.tree_key()
    assert key and not tested.passed_already(key)
    tested.record(key)
    assert tested.passed_already(tested.tree_key())
    (tmp_path / "build" / "ignored.txt").write_text("packed\n")  # what git ignores is not the tree
    assert tested.tree_key() == key
    for change in (lambda: (tmp_path / "app.py").write_text("x = 2\n"), lambda: (tmp_path / "new.py").write_text(""),
                   lambda: (tmp_path / "config").mkdir() or (tmp_path / "config/local.ini").write_text("[app]\n")):
        change()
        assert not tested.passed_already(tested.tree_key())
    (tmp_path / "new.py").unlink()
    (tmp_path / "config/local.ini").unlink()
    tested.record(tested.tree_key())  # x = 2 passed too
    (tmp_path / "app.py").write_text("x = 1\n")  # a change taken back: the tree that passed first
    assert tested.passed_already(tested.tree_key())
    for n in range(tested.KEPT):  # the last few trees are kept, not every one
        (tmp_path / "app.py").write_text(f"x = {n + 10}\n")
        tested.record(tested.tree_key())
    assert len(tested.passed()) == tested.KEPT and not tested.passed_already(key)


def test_maintenance_without_a_proxy_domain_is_refused_before_any_host(settings):
    from ship.targets import TARGETS
    s = settings()
    with pytest.raises(ShipError) as refused:
        TARGETS["maintenance"].run(s, None)  # no Remote: nothing reaches a host
    assert str(refused.value) == ("make maintenance needs a [proxy] domain (config/prod.ini has none): without one, "
                                  "nginx does not answer in front of the app, so nothing can show the page")


def test_several_hosts_behind_a_proxy_domain_tell_the_proxy_every_upstream_and_the_others_their_address(
        settings, monkeypatch, tmp_path):
    monkeypatch.setenv("{{ cookiecutter.package_name | upper }}_PROXY_DOMAIN", "app.example.com")
    (tmp_path / "ssh_config").write_text("Host web2\n  HostName 10.0.0.12\nHost web3\n  HostName fd00::13\n"
                                         "Host *\n  User deploy\n")
    s = settings(REMOTE_HOSTS="web1 web2 web3", PORT="8000")
    assert s.proxy_host == "web1"  # [proxy] host empty: the first
    words = {name: shlex.split(Remote(s, name, "me@laptop").host_env(False)) for name in ("web1", "web2", "web3")}
    assert "EDGE_UPSTREAMS=127.0.0.1:8000 10.0.0.12:8000 [fd00::13]:8000" in words["web1"]
    assert not any(w.startswith(("BIND_HOST=", "EDGE_PROXY=")) for w in words["web1"])
    assert {"EDGE_PROXY=web1", "BIND_HOST=10.0.0.12"} <= set(words["web2"])
    assert {"EDGE_PROXY=web1", "BIND_HOST=fd00::13"} <= set(words["web3"])
    monkeypatch.setenv("{{ cookiecutter.package_name | upper }}_PROXY_HOST", "web2")
    s = settings(REMOTE_HOSTS="web1 web2 web3", PORT="8000")
    assert "EDGE_UPSTREAMS=web1:8000 127.0.0.1:8000 [fd00::13]:8000" in shlex.split(Remote(s, "web2", "me").host_env(False))
    assert {"EDGE_PROXY=web2", "BIND_HOST=web1"} <= set(shlex.split(Remote(s, "web1", "me").host_env(False)))


def test_one_host_or_no_domain_has_no_edge_roles(settings, monkeypatch):
    edge = ("EDGE_UPSTREAMS=", "EDGE_PROXY=", "BIND_HOST=")
    s = settings(REMOTE_HOSTS="web1 web2")
    assert s.proxy_host == "" and not any(w.startswith(edge) for w in shlex.split(Remote(s, "web2", "me").host_env(False)))
    monkeypatch.setenv("{{ cookiecutter.package_name | upper }}_PROXY_DOMAIN", "app.example.com")
    assert not any(w.startswith(edge) for w in shlex.split(remote(settings).host_env(False)))  # one host: as before


def test_a_proxy_host_that_is_not_one_of_the_hosts_is_refused(settings, monkeypatch):
    monkeypatch.setenv("{{ cookiecutter.package_name | upper }}_PROXY_DOMAIN", "app.example.com")
    monkeypatch.setenv("{{ cookiecutter.package_name | upper }}_PROXY_HOST", "web9")
    with pytest.raises(ShipError) as refused:
        settings(REMOTE_HOSTS="web1 web2")
    assert "[proxy] host of config/prod.ini is web9, which is not one of the hosts (web1 web2)" in str(refused.value)
