"""HTTPS at the edge (#20), on a real Debian server booted for the tests (bookworm, with
nginx, certbot and sudo in its rootfs: the servers have no network) and a real ACME CA on
this machine (Debian's pebble, pebble-challtestsrv as the DNS pointing app.test at the
server). Every answer is fetched over real HTTPS and verified against pebble's root.

The server is booted once for the module and the tests run in file order: setup-host as root
(twice), then deploys as the ordinary user it made.
"""
from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from conftest import missing
from harness import acme
from harness.app import make, stage, wait_for
from harness.https_load import HttpsLoad
from harness.systemd import EDGE_PACKAGES, SystemdServer, unavailable

SUITE, INDEX, PORT = "bookworm", 20, 8000
USER = "edge"  # not the harness's `deploy`: setup-host makes it
DOMAIN = "app.test"
SLUG = "my-flask-app"
HELPER = f"/usr/local/lib/{SLUG}-edge/edge.py"
SITE = f"etc/nginx/conf.d/{SLUG}.conf"
CA_BUNDLE = "/usr/local/share/ca-certificates/cfd-test-acme.crt"
RETRY_AFTER = 120  # [proxy] maintenance_retry_after: not the default 300
TIMINGS: list[str] = []


class Edge:
    """The server, the CA and the baked project with its `staging` environment (a copy of prod.ini, [proxy] set)."""

    def __init__(self, server: SystemdServer, ca: acme.Pebble, project: Path, root: Path) -> None:
        self.server, self.ca, self.project, self.root = server, ca, project, root
        self.ini = project / "config" / "staging.ini"

    def make(self, *targets: str, user: str = USER, check: bool = True, **more: str):
        return make(self.project, *targets, check=check, REMOTE_HOST=self.server.alias, REMOTE_USER=user,
                    SSH_OPTS=self.server.ssh_opts, REMOTE_DIR=f"apps/{SLUG}", PORT=str(PORT), APP_ENV="staging", **more)

    def curl(self, url: str, *args: str) -> subprocess.CompletedProcess[str]:
        """curl URL with the domain resolved to the server, TLS verified against pebble's root."""
        address = self.server.address
        return subprocess.run(["curl", "-sS", "--max-time", "10", "--resolve", f"{DOMAIN}:443:{address}",
                               "--resolve", f"{DOMAIN}:80:{address}", "--cacert", str(self.root), *args, url],
                              capture_output=True, text=True, check=False)

    def https_ok(self, path: str = "/healthz") -> str:
        said = self.curl(f"https://{DOMAIN}{path}", "-f")
        assert said.returncode == 0, said.stderr
        return said.stdout

    def set_proxy(self, **values: str) -> None:
        text = self.ini.read_text()
        for key, value in values.items():
            text = re.sub(rf"^{key} =.*$", f"{key} = {value}", text, flags=re.M)
        self.ini.write_text(text)


@pytest.fixture(scope="module")
def edge(tmp_path_factory, baked_project):
    reason = unavailable() or acme.unavailable()
    if reason:
        missing(f"the edge's server and CA: {reason}")
    base = tmp_path_factory.mktemp("edge")
    started = time.monotonic()
    server = SystemdServer(base, "edge", INDEX, SUITE, EDGE_PACKAGES[SUITE])
    try:
        server.start()
        TIMINGS.append(f"rootfs (cached after the first run) and boot to ssh: {time.monotonic() - started:.1f}s")
        with acme.Pebble(base, server.gateway, server.address) as ca, stage(baked_project):
            # pebble's TLS CA, where root keeps CAs: [proxy] acme_ca_bundle names it
            (server.root / CA_BUNDLE.lstrip("/")).write_text(ca.tls_root.read_text())
            root = base / "issuing-root.pem"
            root.write_text(ca.issuing_root())
            project = baked_project
            ini = project / "config" / "staging.ini"
            ini.write_text(ini.read_text() + f"\n[proxy]\ndomain = {DOMAIN}\nacme_directory = {ca.directory}\n"
                           f"acme_ca_bundle = {CA_BUNDLE}\nacme_email = ops@example.com\n"
                           f"maintenance_retry_after = {RETRY_AFTER}\ntls = acme\ncertificate =\nprivate_key =\n")
            yield Edge(server, ca, project, root)
    finally:
        server.stop()
        print("\n" + "\n".join(TIMINGS))


def test_setup_host_makes_the_host_ready_and_a_second_run_changes_nothing(edge):
    started = time.monotonic()
    first = edge.make("setup-host", user="root", DEPLOY_USER=USER).stdout
    edge.setup_seconds = time.monotonic() - started
    TIMINGS.append(f"setup-host on a fresh server: {edge.setup_seconds:.1f}s")
    for change in (f"created the user {USER}", f"lingering on for {USER}", f"{USER} logs in with root's ssh keys",
                   f"installed the edge helper {HELPER}", f"{USER} may run {HELPER} as root without a password",
                   "certbot reloads nginx after a renewal"):
        assert f"  changed: {change}" in first, first
    assert "installing" not in first, first  # nginx, certbot and sudo are in the rootfs: no apt-get
    again = edge.make("setup-host", user="root", DEPLOY_USER=USER).stdout
    assert "setup-host: nothing to change, the host was ready" in again and "changed:" not in again, again
    # the one thing the user may run as root, root's own file
    allowed = edge.server.ssh("sudo -n -l", user=USER).stdout
    assert re.search(rf"\(root\) NOPASSWD: {re.escape(HELPER)}$", allowed, re.M), allowed
    assert edge.server.ssh("sudo -n true", user=USER, check=False).returncode != 0
    assert edge.server.ssh(f"stat -c '%U %a' {HELPER}").stdout.split() == ["root", "755"]


def test_a_bad_domain_fails_before_the_host(edge):
    edge.set_proxy(domain="app_1.test")
    try:
        failed = edge.make("deploy", check=False)
    finally:
        edge.set_proxy(domain=DOMAIN)
    assert failed.returncode != 0
    assert "[proxy] domain: 'app_1.test' is not a domain name" in failed.stdout + failed.stderr
    assert not (edge.server.root / SITE).exists()


def test_the_first_deploy_as_the_deploy_user_obtains_the_certificate_and_serves_https(edge):
    started = time.monotonic()
    deployed = edge.make("deploy").stdout
    took = time.monotonic() - started
    TIMINGS.append(f"first deploy (local tests and pack included) to https serving: {took:.1f}s; "
                   f"fresh server to https: {edge.setup_seconds + took:.1f}s")
    assert f"edge: certificate for {DOMAIN} from {edge.ca.directory}" in deployed, deployed
    assert f"edge: nginx site /{SITE} (acme, to 127.0.0.1:{PORT})" in deployed, deployed
    assert json.loads(edge.https_ok())["status"] == "ok"
    assert edge.https_ok("/").strip()


def test_http_is_redirected_to_https_with_its_path_and_query_but_the_acme_challenge(edge):
    said = edge.curl(f"http://{DOMAIN}/notes?page=2&q=a%20b", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}")
    assert said.stdout == f"301 https://{DOMAIN}/notes?page=2&q=a%20b", said
    challenge = f"/var/lib/{SLUG}-edge/acme/.well-known/acme-challenge"
    edge.server.ssh(f"mkdir -p {challenge} && echo token-1 >{challenge}/probe-1")
    assert edge.curl(f"http://{DOMAIN}/.well-known/acme-challenge/probe-1", "-f").stdout == "token-1\n"
    missing_one = edge.curl(f"http://{DOMAIN}/.well-known/acme-challenge/none", "-o", "/dev/null", "-w", "%{http_code}")
    assert missing_one.stdout == "404"


def test_https_sends_hsts_and_the_app_port_is_closed(edge):
    headers = edge.curl(f"https://{DOMAIN}/healthz", "-f", "-o", "/dev/null", "-D", "-").stdout
    assert re.search(r"^strict-transport-security: max-age=31536000\r?$", headers, re.M | re.I), headers
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((edge.server.address, PORT), timeout=3).close()
    listening = edge.server.ssh(f"ss -ltnH 'sport = :{PORT}'").stdout
    assert [line.split()[3] for line in listening.splitlines()] == [f"127.0.0.1:{PORT}"], listening


def test_make_status_shows_the_domain_and_the_certificates_expiry(edge):
    status = edge.make("status").stdout
    assert re.search(rf"^proxy: https://{DOMAIN}/ \(tls acme, certificate expires \w+ +\d+ [\d:]+ \d{{4}} GMT\)$",
                     status, re.M), status


def test_a_redeploy_under_https_load_keeps_the_site_and_the_certificate_and_fails_no_request(edge):
    site = (edge.server.root / SITE).read_text()
    with HttpsLoad(edge.root, edge.server.address, DOMAIN) as load:
        time.sleep(1)
        again = edge.make("deploy").stdout
        time.sleep(1)
    TIMINGS.append(f"a redeploy under load: {load.summary()}")
    assert load.failures == [] and load.requests > 20, load.summary() + "\n" + "\n".join(load.failures[:10])
    assert f"edge: nginx site for {DOMAIN} unchanged" in again and "certificate for" not in again, again
    assert (edge.server.root / SITE).read_text() == site
    edge.https_ok()


def answer(edge, path: str, *args: str) -> tuple[str, str]:
    """The status line with the headers, and the body, of an HTTPS request (verified)."""
    said = edge.curl(f"https://{DOMAIN}{path}", "-D", "-", *args)
    assert said.returncode == 0, said.stderr
    head, _, body = said.stdout.replace("\r\n", "\n").partition("\n\n")  # (text mode: \r\n may be \n already)
    return head, body


def in_maintenance(edge, path: str = "/", *args: str) -> bool:
    head, body = answer(edge, path, *args)
    if not re.match(r"HTTP/\S+ 503", head):
        return False
    assert re.search(rf"^retry-after: {RETRY_AFTER}\r?$", head, re.M | re.I), head
    assert re.search(r"^strict-transport-security: max-age=31536000\r?$", head, re.M | re.I), head
    assert "Back at 14:00 &lt;b&gt;UTC&lt;/b&gt; &amp; &quot;soon&quot;" in body and "<b>" not in body, body
    return True


def test_maintenance_is_refused_without_a_domain(edge):
    edge.set_proxy(domain="")
    try:
        refused = edge.make("maintenance", check=False, MESSAGE="down")
    finally:
        edge.set_proxy(domain=DOMAIN)
    assert refused.returncode != 0
    assert "make maintenance needs a [proxy] domain (config/staging.ini has none)" in refused.stdout + refused.stderr
    assert not in_maintenance(edge)


def test_maintenance_answers_503_with_the_message_but_healthz_through_a_deploy_and_a_reboot_until_live(edge):
    started = time.monotonic()
    on = edge.make("maintenance", MESSAGE='Back at 14:00 <b>UTC</b> & "soon"').stdout
    try:
        maintenance_then_live(edge, on, started)
    finally:
        edge.make("live", check=False)  # the tests after this one need the app


def maintenance_then_live(edge, on: str, started: float) -> None:
    assert "edge: maintenance on" in on, on
    for path in ("/", "/notes?page=2", "/static/none.css", "/.well-known/acme-challenge/x"):
        assert in_maintenance(edge, path), path
    assert in_maintenance(edge, "/login", "-X", "POST", "-d", "a=b")  # the page, not nginx's 405
    assert json.loads(edge.https_ok())["status"] == "ok"  # /healthz reaches the app
    TIMINGS.append(f"make maintenance to the 503 page: {time.monotonic() - started:.1f}s")
    assert re.search(r"^maintenance: on since \S+Z \(make live ends it\)$", edge.make("status").stdout, re.M)
    edge.make("deploy")  # the site it writes keeps the check
    assert in_maintenance(edge)
    edge.server.reboot()
    wait_for(lambda: edge.curl(f"https://{DOMAIN}/healthz", "-f").returncode == 0, 60, "the app after the reboot")
    assert in_maintenance(edge)
    live = edge.make("live").stdout
    assert "edge: maintenance off: the app answers again" in live, live
    assert not in_maintenance(edge) and edge.https_ok("/").strip()
    assert re.search(r"^maintenance: off$", edge.make("status").stdout, re.M)
    assert "maintenance was off" in edge.make("live").stdout


def test_static_files_are_served_by_nginx_cached_gzipped_and_bridged_from_the_previous_release(edge):
    static = edge.project / "src" / "my_flask_app" / "static"
    css = "body { color: #333; }\n" + "".join(f".c{n} {{ margin: {n}px; }}\n" for n in range(50))
    (static / "old-only.css").write_text(css)
    try:
        edge.make("deploy")
        head, body = answer(edge, "/static/old-only.css", "--compressed")
        assert re.match(r"HTTP/\S+ 200", head) and body == css, head
        assert re.search(r"^cache-control: public, max-age=3600\r?$", head, re.M | re.I), head
        assert re.search(r"^content-encoding: gzip\r?$", head, re.M | re.I), head
        assert re.search(r"^strict-transport-security: max-age=31536000\r?$", head, re.M | re.I), head
        (static / "old-only.css").unlink()
        (static / "new-only.css").write_text(css)
        edge.make("deploy")  # the new release has no old-only.css: the previous one's is served
        for name in ("old-only.css", "new-only.css", "style.css"):
            head, body = answer(edge, f"/static/{name}")
            assert re.match(r"HTTP/\S+ 200", head), (name, head)
        assert answer(edge, "/static/none.css")[0].startswith("HTTP/1.1 404")
    finally:
        for name in ("old-only.css", "new-only.css"):
            (static / name).unlink(missing_ok=True)
    # nginx's user reads the releases' static files, and none of the app's private ones
    app = f"/home/{USER}/apps/{SLUG}"
    as_nginx = f"runuser -u www-data -- cat {app}/current/static/new-only.css"
    assert edge.server.ssh(as_nginx).stdout == css
    for private in ("shared/local.ini", "state"):
        assert edge.server.ssh(f"runuser -u www-data -- ls {app}/{private}", check=False).returncode != 0, private
    assert edge.server.ssh(f"stat -c %a {app}/shared").stdout.strip() == "700"


def wrk(edge, url: str, *args: str) -> float:
    """wrk's requests/s for URL, run in the server's network namespace (so that both figures
    have the same client and path: loopback), 2 threads, 16 connections, 5 s; no errors."""
    said = subprocess.run(["ip", "netns", "exec", edge.server.netns, "nice", "-n", "10", "wrk", "-t2", "-c16", "-d5s",
                           *args, url], capture_output=True, text=True, check=True, timeout=60)
    assert "Non-2xx" not in said.stdout and "Socket errors" not in said.stdout, said.stdout
    return float(re.search(r"^Requests/sec:\s+([\d.]+)", said.stdout, re.M)[1])


def test_requests_per_second_over_https_through_nginx_and_plain_http_to_gunicorn(edge):
    if subprocess.run(["sh", "-c", "command -v wrk"], capture_output=True).returncode != 0:
        missing("wrk is not installed (apt-get install wrk)")
    https = wrk(edge, "https://127.0.0.1/", "-H", f"Host: {DOMAIN}")  # wrk keeps its TLS connections open
    plain = wrk(edge, f"http://127.0.0.1:{PORT}/")
    TIMINGS.append(f"wrk on /, keep-alive: {https:.0f} requests/s over HTTPS through nginx, {plain:.0f}/s plain "
                   "HTTP straight to gunicorn")
    assert https > 0 and plain > 0


def serial(edge) -> str:
    """The serial of the certificate the site serves, verified against pebble's root."""
    context = ssl.create_default_context(cafile=str(edge.root))
    with socket.create_connection((edge.server.address, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=DOMAIN) as tls:
        return tls.getpeercert()["serialNumber"]


def test_a_renewal_by_certbot_under_https_load_is_served_after_its_hook_reloads_nginx_failing_no_request(edge):
    before = serial(edge)
    # the timer's service trusts the private ACME server as the deploy did
    shown = edge.server.ssh("systemctl show certbot.service -p Environment").stdout.strip()
    assert shown == f"Environment=REQUESTS_CA_BUNDLE=/etc/{SLUG}-edge/acme-ca.pem", shown
    # as its timer runs it (Debian's certbot.service), forced: a renewal is not due for months
    renew = "certbot -q renew --no-random-sleep-on-renew --force-renewal"
    with HttpsLoad(edge.root, edge.server.address, DOMAIN) as load:
        edge.server.ssh(f"env {shown.partition('=')[2]} {renew} --cert-name {DOMAIN}", timeout=120)
        wait_for(lambda: serial(edge) != before, 10, "the renewed certificate served")
        time.sleep(1)
    TIMINGS.append(f"a forced renewal under load: {load.summary()}")
    assert load.failures == [] and load.requests > 20, load.summary() + "\n" + "\n".join(load.failures[:10])
    edge.https_ok()


def test_a_refused_acme_order_fails_the_deploy_and_the_old_site_serves(edge):
    edge.ca.refuse("refused.test")  # its DNS fails: pebble cannot validate it
    site = (edge.server.root / SITE).read_text()
    before = edge.https_ok()
    edge.set_proxy(domain="refused.test")
    try:
        failed = edge.make("deploy", check=False)
    finally:
        edge.set_proxy(domain=DOMAIN)
    said = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert f"the ACME server {edge.ca.directory} gave no certificate for refused.test" in said, said
    assert "the running site is unchanged" in said and "not activated" in said, said
    assert (edge.server.root / SITE).read_text() == site
    assert not (edge.server.root / f"etc/nginx/conf.d/{SLUG}-acme.conf").exists()
    assert edge.https_ok() == before  # the same release, through the same site


def test_tls_own_serves_the_users_certificate_from_the_apps_directory(edge, tmp_path):
    ca, chain, key = acme.throwaway_ca(tmp_path / "own", "", name=DOMAIN)  # the user's own CA and certificate
    tls = f"/home/{USER}/apps/{SLUG}/shared/tls"  # on the host, the deploy user's
    for name, source in (("chain.pem", chain), ("key.pem", key)):
        edge.server.ssh(f"umask 077 && mkdir -p {tls} && cat >{tls}/{name}", user=USER, input=source.read_text())
    edge.set_proxy(tls="own", certificate=f"{tls}/chain.pem", private_key=f"{tls}/key.pem")
    try:
        deployed = edge.make("deploy").stdout
        assert f"edge: certificate and key for {DOMAIN} copied to /etc/{SLUG}-edge/tls" in deployed, deployed
        assert f"edge: nginx site /{SITE} (own, to 127.0.0.1:{PORT})" in deployed, deployed
        head, body = answer(edge, "/healthz", "--cacert", str(ca))  # verified against the test's own CA
        assert re.match(r"HTTP/\S+ 200", head) and json.loads(body)["status"] == "ok", head
        assert re.search(r"^strict-transport-security: max-age=31536000\r?$", head, re.M | re.I), head
        assert edge.curl(f"https://{DOMAIN}/healthz", "-f").returncode != 0  # no longer pebble's certificate
        redirect = edge.curl(f"http://{DOMAIN}/a?b=1", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}")
        assert redirect.stdout == f"301 https://{DOMAIN}/a?b=1", redirect
        status = edge.make("status").stdout
        assert re.search(rf"^proxy: https://{DOMAIN}/ \(tls own, certificate expires .+ GMT\)$", status, re.M), status
    finally:
        edge.set_proxy(tls="acme", certificate="", private_key="")


def test_tls_off_is_plain_http_through_nginx_without_a_redirect_or_hsts(edge):
    edge.set_proxy(tls="off")
    try:
        deployed = edge.make("deploy").stdout
        assert f"edge: nginx site /{SITE} (off, to 127.0.0.1:{PORT})" in deployed, deployed
        said = edge.curl(f"http://{DOMAIN}/healthz", "-f", "-D", "-")
        head, _, body = said.stdout.replace("\r\n", "\n").partition("\n\n")
        assert said.returncode == 0 and re.match(r"HTTP/\S+ 200", head), said
        assert "strict-transport-security" not in head.lower(), head
        assert json.loads(body)["status"] == "ok"
        page = edge.curl(f"http://{DOMAIN}/", "-o", "/dev/null", "-w", "%{http_code}")
        assert page.stdout == "200", page  # not a redirect
        with pytest.raises(ConnectionRefusedError):  # nothing on 443
            socket.create_connection((edge.server.address, 443), timeout=3).close()
        with pytest.raises(ConnectionRefusedError):  # and gunicorn still on 127.0.0.1 alone
            socket.create_connection((edge.server.address, PORT), timeout=3).close()
        assert re.search(rf"^proxy: http://{DOMAIN}/ \(tls off\)$", edge.make("status").stdout, re.M)
    finally:
        edge.set_proxy(tls="acme")
    edge.make("deploy")  # back to the certificate it has (same directory: no new order)
    edge.https_ok()
