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
from harness.systemd import EDGE_PACKAGES, SystemdServer, unavailable

SUITE, INDEX, PORT = "bookworm", 20, 8000
USER = "edge"  # not the harness's `deploy`: setup-host makes it
DOMAIN = "app.test"
SLUG = "my-flask-app"
HELPER = f"/usr/local/lib/{SLUG}-edge/edge.py"
SITE = f"etc/nginx/conf.d/{SLUG}.conf"
CA_BUNDLE = "/usr/local/share/ca-certificates/cfd-test-acme.crt"
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
            text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
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
                           f"acme_ca_bundle = {CA_BUNDLE}\nacme_email = ops@example.com\n")
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


def test_a_redeploy_keeps_the_site_and_the_certificate(edge):
    site = (edge.server.root / SITE).read_text()
    again = edge.make("deploy").stdout
    assert f"edge: nginx site for {DOMAIN} unchanged" in again and "certificate for" not in again, again
    assert (edge.server.root / SITE).read_text() == site
    edge.https_ok()


def serial(edge) -> str:
    """The serial of the certificate the site serves, verified against pebble's root."""
    context = ssl.create_default_context(cafile=str(edge.root))
    with socket.create_connection((edge.server.address, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=DOMAIN) as tls:
        return tls.getpeercert()["serialNumber"]


def test_a_renewal_by_certbot_is_served_after_its_hook_reloads_nginx(edge):
    before = serial(edge)
    # the timer's service trusts the private ACME server as the deploy did
    shown = edge.server.ssh("systemctl show certbot.service -p Environment").stdout.strip()
    assert shown == f"Environment=REQUESTS_CA_BUNDLE=/etc/{SLUG}-edge/acme-ca.pem", shown
    # as its timer runs it (Debian's certbot.service), forced: a renewal is not due for months
    renew = "certbot -q renew --no-random-sleep-on-renew --force-renewal"
    edge.server.ssh(f"env {shown.partition('=')[2]} {renew} --cert-name {DOMAIN}", timeout=120)
    wait_for(lambda: serial(edge) != before, 10, "the renewed certificate served")
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
