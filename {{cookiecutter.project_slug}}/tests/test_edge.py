"""The edge helper (deploy/host/edge.py, run as root by the deploy user through sudo): what it
accepts, what it refuses, the nginx site it writes, and how it reads the user's files."""
import os
import re
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parents[1] / "deploy"
sys.path.insert(0, str(DEPLOY))
from host import commands, edge, proxy  # noqa: F401 (commands first: it registers proxy's after its own)

APP = "/home/deploy/apps/{{ cookiecutter.project_slug }}"
CERT = "-----BEGIN CERTIFICATE-----\nTUlJQg==\n-----END CERTIFICATE-----"
KEY = "-----BEGIN PRIVATE KEY-----\nTUlJRQ==\n-----END PRIVATE KEY-----"


def acme(**given):
    return {"domain": "app.example.com", "tls": "acme", "port": "8000",
            "directory": "https://acme-v02.api.letsencrypt.org/directory", **given}


def test_a_plain_request_is_accepted():
    request = edge.check(acme(email="ops@example.com", ca_bundle=f"{APP}/shared/ca.pem"), APP)
    assert request == edge.Request("app.example.com", "acme", 8000, "ops@example.com",
                                   "https://acme-v02.api.letsencrypt.org/directory", f"{APP}/shared/ca.pem",
                                   static_root=APP, static_max_age=3600)


def test_every_bad_value_is_refused_in_one_sentence():
    with pytest.raises(edge.EdgeError) as caught:
        edge.check({"domain": "evil.com;\n}", "tls": "acme", "port": "80", "email": "x",
                    "directory": "file:///etc/shadow", "ca_bundle": "/etc/shadow"}, APP)
    assert str(caught.value) == (
        "'evil.com;\\n}' is not a domain name (lowercase, e.g. app.example.com); "
        "port '80' is not an unprivileged port (1024 to 65535) for gunicorn on 127.0.0.1; "
        "'x' is not an e-mail address; the ACME directory 'file:///etc/shadow' is not an https:// URL; "
        f"ca_bundle '/etc/shadow' is not a plain absolute path under {APP} or /etc/ssl/ or "
        "/usr/local/share/ca-certificates/ or /usr/share/ca-certificates/")
    with pytest.raises(edge.EdgeError, match=r"^static_max_age '1h' is not a number of seconds \(at most 10 years\); "
                                             r"the app's directory '/srv/my app' \(edge.json\) is not a plain absolute"):
        edge.check(acme(static_max_age="1h"), "/srv/my app")


@pytest.mark.parametrize("path", [f"{APP}/../other/key.pem", "/home/deploy/apps/other/key.pem", f"{APP}",
                                  f"{APP}/shared/$(id).pem", "relative/key.pem", f"{APP}//shared/key.pem"])
def test_own_files_must_be_plain_paths_in_the_apps_directory(path):
    with pytest.raises(edge.EdgeError, match="private_key .* is not a plain absolute path under"):
        edge.check(acme(tls="own", certificate=f"{APP}/shared/tls/chain.pem", private_key=path), APP)


def test_own_tls_without_its_files_and_a_bad_tls_mode():
    with pytest.raises(edge.EdgeError, match="^tls own needs certificate; tls own needs private_key$"):
        edge.check(acme(tls="own"), APP)
    with pytest.raises(edge.EdgeError, match="^tls 'none' is not acme, own or off$"):
        edge.check(acme(tls="none"), APP)


PAGE = "/etc/{{ cookiecutter.project_slug }}-edge/maintenance/page.html"
FLAG = "${{ cookiecutter.project_slug | replace('-', '_') }}_maintenance"
INTERNAL = "/.{{ cookiecutter.project_slug }}-maintenance.html"
MAINTENANCE = [  # the page's presence is the switch: nginx checks it at each request
    f'    set {FLAG} "";', f"    if (-f {PAGE}) " + "{" + f" set {FLAG} on; " + "}",
    "    if ($uri = /healthz) {" + f' set {FLAG} ""; ' + "}", f"    if ($uri = {INTERNAL}) " + "{" + f' set {FLAG} ""; ' + "}",
    f"    if ({FLAG}) " + "{ return 503; }", f"    error_page 503 {INTERNAL};",
    f"    location = {INTERNAL} " + "{", "        internal;", f"        alias {PAGE};", "        default_type text/html;",
    "        charset utf-8;", "        add_header Retry-After 300 always;", '        add_header Cache-Control "no-store" always;']


def test_the_https_site():
    site = edge.render_site(edge.Request("app.example.com", "acme", 8000))
    live = "/etc/letsencrypt/live/app.example.com"
    assert site == "\n".join([
        "# {{ cookiecutter.project_slug }}'s site, written by its edge helper at every deploy: do not edit (make deploy writes it).",
        "",
        "server {", "    listen 80;", "    server_name app.example.com;",
        "    location /.well-known/acme-challenge/ {", f"        root {edge.WEBROOT};",
        "        default_type text/plain;", "    }",
        "    location / {", "        return 301 https://app.example.com$request_uri;", "    }", "}", "",
        "server {", "    listen 443 ssl;", "    server_name app.example.com;",
        f"    ssl_certificate {live}/fullchain.pem;", f"    ssl_certificate_key {live}/privkey.pem;",
        "    ssl_protocols TLSv1.2 TLSv1.3;",
        "    ssl_session_cache shared:{{ cookiecutter.project_slug | replace('-', '_') }}_tls:10m;",
        '    add_header Strict-Transport-Security "max-age=31536000" always;',
        *MAINTENANCE, '        add_header Strict-Transport-Security "max-age=31536000" always;', "    }",
        "    location / {", "        proxy_pass http://127.0.0.1:8000;", "        proxy_http_version 1.1;",
        '        proxy_set_header Connection "";', "        proxy_set_header Host $host;",
        "        proxy_set_header X-Real-IP $remote_addr;",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "        proxy_set_header X-Forwarded-Proto $scheme;", "    }", "}", ""])


def test_own_and_off_sites():
    own = edge.render_site(edge.Request("app.example.com", "own", 9000, certificate="/x", private_key="/y"))
    assert f"    ssl_certificate {edge.STATE}/tls/fullchain.pem;" in own.splitlines()
    off = edge.render_site(edge.Request("app.example.com", "off", 9000)).splitlines()
    assert "    listen 443 ssl;" not in off and "return 301" not in "\n".join(off)
    assert "        proxy_pass http://127.0.0.1:9000;" in off and "    location /.well-known/acme-challenge/ {" in off
    assert off[off.index(MAINTENANCE[0]):][:len(MAINTENANCE) + 1] == [*MAINTENANCE, "    }"]  # no HSTS on http


def test_the_challenge_site_answers_only_the_challenge():
    lines = edge.render_acme_site("new.example.com").splitlines()
    assert "    server_name new.example.com;" in lines
    assert lines[lines.index("    location / {") + 1] == "        return 404;"


def test_pem_blocks_keep_only_the_named_blocks():
    data = f"# Issuer: someone\n{CERT}\r\ngarbage\n{KEY}\n{CERT}\n".encode()
    assert edge.pem_blocks(data, edge.CERT_LABELS, "f") == f"{CERT}\n{CERT}\n"
    assert edge.pem_blocks(data, edge.KEY_LABELS, "f") == f"{KEY}\n"
    with pytest.raises(edge.EdgeError, match="^/etc/shadow holds no PEM CERTIFICATE block$"):
        edge.pem_blocks(b"root:$y$j9T$...:19000:0:99999:7:::\n", edge.CERT_LABELS, "/etc/shadow")


def test_files_are_read_without_following_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "ca.pem").write_text(CERT)
    os.symlink(tmp_path / "real", tmp_path / "dirlink")
    os.symlink(tmp_path / "real" / "ca.pem", tmp_path / "real" / "link.pem")
    assert edge.read_nofollow(str(tmp_path / "real" / "ca.pem")) == CERT.encode()
    for linked in ("dirlink/ca.pem", "real/link.pem"):
        with pytest.raises(edge.EdgeError, match="a link is never followed"):
            edge.read_nofollow(str(tmp_path / linked))
    with pytest.raises(edge.EdgeError, match="is not a regular file"):
        edge.read_nofollow(str(tmp_path / "real"))


def test_the_helper_file_is_the_module_with_a_root_shebang():
    source = proxy.helper_source()
    assert source.startswith(f"#!{os.path.realpath(sys.executable)} -I\n".encode())
    assert source.endswith((DEPLOY / "host" / "edge.py").read_bytes())
    # installed, it runs alone beside its one sibling (root's): no other module of the host program
    imported = {line.split()[1] for line in source.decode().splitlines() if line.strip().startswith(("from ", "import "))}
    assert {name for name in imported if name.startswith(("host", "edge"))} == {"host.edge_site", "edge_site"}


def test_the_helper_refuses_to_run_as_anyone_but_root(capsys, monkeypatch):
    monkeypatch.setattr(edge.os, "geteuid", lambda: 1000)  # the template's tests run it as root, on a server
    assert edge.main(["status"]) == 1
    assert capsys.readouterr().err == "error: the edge helper runs as root (sudo)\n"


@pytest.mark.parametrize(("user", "ok"), [("deploy", True), ("web_1", True), ("Deploy", False), ("a b", False),
                                          ("-o", False), ("x" * 33, False)])
def test_deploy_user_names(user, ok):
    assert bool(proxy.USER_NAME.fullmatch(user)) is ok


def test_a_certificate_is_ordered_again_only_from_another_acme_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(edge, "LETSENCRYPT", tmp_path)
    request = edge.check(acme(), APP)
    assert not edge.has_certificate(request)  # none yet: the first deploy orders one
    (tmp_path / "live" / request.domain).mkdir(parents=True)
    (tmp_path / "live" / request.domain / "fullchain.pem").write_text(CERT)
    (tmp_path / "renewal").mkdir()
    renewal = tmp_path / "renewal" / f"{request.domain}.conf"
    renewal.write_text(f"[renewalparams]\nauthenticator = webroot\nserver = {request.directory}\n")
    assert edge.has_certificate(request)
    assert not edge.has_certificate(edge.check(acme(directory="https://ca.internal/acme/directory"), APP))


def test_status_names_what_was_applied_last(tmp_path, monkeypatch):
    monkeypatch.setattr(edge, "STATE", tmp_path)
    assert edge.status() == {"domain": ""}
    assert edge.write_file(tmp_path / "applied.json", '{"domain": "app.example.com", "tls": "off", "port": 8000}')
    assert not edge.write_file(tmp_path / "applied.json", '{"domain": "app.example.com", "tls": "off", "port": 8000}')
    assert edge.status() == {"domain": "app.example.com", "tls": "off", "maintenance": ""}


def test_the_maintenance_page_shows_the_message_escaped():
    template = (DEPLOY / "maintenance.html").read_text()
    page = proxy.render_page(template, 'Back at 14:00 <script>alert("x")</script> & $HOME', "2026-12-01 22:40 UTC")
    assert '<p class="message">Back at 14:00 &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; $HOME</p>' in page
    assert "Since 2026-12-01 22:40 UTC." in page and "<script>" not in page
    assert "$message is the MESSAGE" in page  # the comment's $$ stays a plain $
    assert proxy.render_page("cost: $5 $message", "a", "b") == "cost: $5 a"


@pytest.mark.parametrize(("given", "why"), [("  ", "say what the visitors read"),
                                             ("two\nlines", "one line of printable text"), ("x" * 501, "at most 500")])
def test_a_maintenance_message_is_one_printable_line(given, why):
    with pytest.raises(proxy.Failure, match=why):
        proxy.maintenance_message(given)
    assert proxy.maintenance_message(" Back soon ") == "Back soon"


def test_the_helper_turns_maintenance_on_only_over_a_site_that_has_it_and_off(tmp_path, monkeypatch):
    site, page = tmp_path / "conf.d" / "app.conf", tmp_path / "maintenance" / "page.html"
    monkeypatch.setattr(edge, "SITE", site)
    monkeypatch.setattr(edge, "MAINTENANCE_PAGE", page)
    monkeypatch.setattr(edge, "STATE", tmp_path)
    with pytest.raises(edge.EdgeError, match="make deploy first"):
        edge.maintenance(True, b"<p>down</p>")  # no site yet
    site.parent.mkdir()
    site.write_text("server { }\n")  # a site from before maintenance mode
    with pytest.raises(edge.EdgeError, match="make deploy first"):
        edge.maintenance(True, b"<p>down</p>")
    site.write_text(edge.render_site(edge.Request("app.example.com", "acme", 8000)))
    with pytest.raises(edge.EdgeError, match="not UTF-8"):
        edge.maintenance(True, b"\xff\xfe")
    with pytest.raises(edge.EdgeError, match="larger than"):
        edge.maintenance(True, b"x" * 300_000)
    assert not page.exists()
    assert edge.maintenance(True, "<p>en panne, désolé</p>".encode()).startswith("maintenance on")
    assert page.read_text() == "<p>en panne, désolé</p>" and page.stat().st_mode & 0o777 == 0o644
    edge.write_file(tmp_path / "applied.json", '{"domain": "app.example.com", "tls": "off", "port": 8000}')
    assert edge.status()["maintenance"].endswith("Z")
    assert edge.maintenance(False, b"") == "maintenance off: the app answers again"
    assert not page.exists() and edge.status()["maintenance"] == ""
    assert edge.maintenance(False, b"") == "maintenance was off"


def test_static_files_come_from_the_current_release_else_the_previous_one_cached_and_gzipped():
    request = edge.check(acme(static_max_age="86400"), APP)
    site = edge.render_site(request).splitlines()
    https = site[site.index("    listen 443 ssl;"):]
    start = https.index("    location /static/ {")
    assert https[start:start + 9] == [
        "    location /static/ {", f"        root {APP};", "        try_files /current$uri /previous$uri =404;",
        '        add_header Cache-Control "public, max-age=86400";',
        '        add_header Strict-Transport-Security "max-age=31536000" always;',
        "        gzip on;", "        gzip_vary on;",
        "        gzip_types text/css text/javascript application/javascript application/json image/svg+xml text/plain;",
        "    }"]
    assert https.index(MAINTENANCE[-1]) < start  # maintenance covers /static/ too (only /healthz is exempt)
    assert "location /static/" not in edge.render_site(edge.Request("app.example.com", "acme", 8000))


# --- several hosts: the proxy host's site balances over them all -----------------------------------

UPSTREAM = "{{ cookiecutter.project_slug | replace('-', '_') }}_edge"


def test_several_hosts_are_one_upstream_with_the_passive_health_checks_of_make_nginx_conf():
    request = edge.check(acme(upstream=["127.0.0.1:8000", "10.0.0.12:8000", "[FD00::0013]:8000", "Web3.internal:8000"]),
                         APP)
    assert request.upstreams == ("127.0.0.1:8000", "10.0.0.12:8000", "[fd00::13]:8000", "web3.internal:8000")
    lines = edge.render_site(request).splitlines()
    assert lines[2:9] == ["upstream " + UPSTREAM + " {",
                          "    server 127.0.0.1:8000 max_fails=3 fail_timeout=10s;",
                          "    server 10.0.0.12:8000 max_fails=3 fail_timeout=10s;",
                          "    server [fd00::13]:8000 max_fails=3 fail_timeout=10s;",
                          "    server web3.internal:8000 max_fails=3 fail_timeout=10s;", "}", ""]
    proxy = lines.index("    location / {", lines.index("    listen 443 ssl;"))
    assert lines[proxy + 1:proxy + 6] == [
        f"        proxy_pass http://{UPSTREAM};",
        "        proxy_next_upstream error timeout http_502 http_503 http_504;", "        proxy_connect_timeout 2s;",
        "        proxy_http_version 1.1;", '        proxy_set_header Connection "";']
    # the same health checks as make nginx-conf's snippet
    import nginx_conf
    assert "max_fails=3 fail_timeout=10s;" in nginx_conf.render("app", ["10.0.0.12"], "8000", "80", "/s/")
    # and a rollout waits that long after a host restarted, before the next one goes down
    from host import edge_site
    from ship import fleet
    assert edge_site.FAIL_TIMEOUT == f"{fleet.PASSIVE_CHECK_SECONDS}s"
    # one host: no upstream block, as before
    single = edge.render_site(edge.check(acme(upstream=["127.0.0.1:8000"]), APP))
    assert "upstream " not in single and "        proxy_pass http://127.0.0.1:8000;" in single.splitlines()


@pytest.mark.parametrize("entry, why", [
    ("10.0.0.12", "is not HOST:PORT"), ("10.0.0.12:0", "is not HOST:PORT"), ("10.0.0.12:70000", "is not HOST:PORT"),
    ("10.0.0.12:80 down", "is not HOST:PORT"), ("10.0.0.12:+80", "is not HOST:PORT"),
    ("x;}server{:8000", "is neither an IP address nor a host name"),
    ("evil.com; include /etc/shadow:8000", "is neither an IP address nor a host name"),
    ("10.0.0.999:8000", "is neither an IP address nor a host name"), ("[web2]:8000", "is neither"),
    ("fd00::13:8000", "an IPv6 address goes in brackets"), ("-web:8000", "is neither"),
    ("web2\n:8000", "is neither"), ("a" * 64 + ":8000", "is neither")])
def test_each_upstream_is_checked_before_it_reaches_nginx(entry, why):
    with pytest.raises(edge.EdgeError, match=f"^upstream {re.escape(repr(entry))}.*{re.escape(why)}"):
        edge.check(acme(upstream=[entry]), APP)


def test_too_many_upstreams_are_refused():
    with pytest.raises(edge.EdgeError, match="^65 upstreams: at most 64$"):
        edge.check(acme(upstream=[f"10.0.1.{n}:8000" for n in range(65)]), APP)


def test_the_maintenance_retry_after_is_a_setting():
    request = edge.check(acme(retry_after="60"), APP)
    assert request.retry_after == 60
    assert "        add_header Retry-After 60 always;" in edge.render_site(request).splitlines()
    assert edge.check(acme(), APP).retry_after == 300
    with pytest.raises(edge.EdgeError, match=r"^retry_after '5m' is not a number of seconds \(at most a week\)$"):
        edge.check(acme(retry_after="5m"), APP)


@pytest.mark.parametrize("given, ok", [("10.0.0.12", "10.0.0.12"), ("fd00::13", "fd00::13"), ("web2.internal", "web2.internal"),
                                       ("", ""), ("web2 PORT=1", None), ("a\nExecStart=x", None), ("1.2.3.999", None)])
def test_the_bind_address_of_a_host_behind_the_proxy_is_checked(given, ok):
    from host.context import Failure, bind_address
    if ok is None:
        with pytest.raises(Failure, match="is neither an IP address nor a host name"):
            bind_address(given)
    else:
        assert bind_address(given) == ok


def test_a_host_behind_the_proxy_binds_its_address_in_its_unit_too():
    from host import systemd
    units = systemd.Units("my-app", "prod", "/srv/app", "my-app-prod-1", "user", "my-app", "8000", "python3", "51200", "5",
                          bind_host="10.0.0.12")
    assert units.common()[0].endswith(" LOG_KEEP=5 BIND_HOST=10.0.0.12")


def test_a_host_behind_the_proxy_keeps_its_place_for_commands_given_no_edge_words(tmp_path):
    from host.context import Host, Settings
    (tmp_path / "state").mkdir()
    Host(Settings(app_dir=tmp_path, edge_proxy="web1", bind_host="10.0.0.12"), "deploy").record_edge()
    alone = Host(Settings(app_dir=tmp_path), "start")  # make start REMOTE_HOST=web2
    alone.recorded_edge()
    assert (alone.settings.edge_proxy, alone.settings.bind_host) == ("web1", "10.0.0.12")
    told = Host(Settings(app_dir=tmp_path, edge_proxy="web3", bind_host="10.0.0.13"), "deploy")
    told.recorded_edge()  # what the deploy program says wins
    assert (told.settings.edge_proxy, told.settings.bind_host) == ("web3", "10.0.0.13")
    Host(Settings(app_dir=tmp_path, upstreams=("127.0.0.1:8000", "10.0.0.13:8000")), "deploy").record_edge()
    assert Host(Settings(app_dir=tmp_path), "start").edge_record() == ("", "")  # now the proxy host itself
    (tmp_path / "state" / "edge.json").write_text('{"proxy": "web1", "bind": "x; rm -rf /"}')
    assert Host(Settings(app_dir=tmp_path), "start").edge_record() == ("", "")  # checked as BIND_HOST is
