"""The nginx site of the edge helper (host/edge.py): its text, and where the files it names
live. Installed beside edge.py by `make setup-host`, root's; pure text, standard library only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SLUG = "{{ cookiecutter.project_slug }}"
STATE = Path("/etc") / f"{SLUG}-edge"  # root's: the CA bundle, own certificates, what was applied
WEBROOT = Path("/var/lib") / f"{SLUG}-edge" / "acme"
LETSENCRYPT = Path("/etc/letsencrypt")
CHALLENGE = "/.well-known/acme-challenge/"
HSTS = "max-age=31536000"
ZONE = re.sub(r"[^A-Za-z0-9_]", "_", SLUG)  # nginx names (variables, zones) of this app's site
# make maintenance writes the page here (root's, readable by nginx); while it exists, every
# path but /healthz answers 503 with it. The address is internal (error_page's only).
MAINTENANCE_PAGE = STATE / "maintenance" / "page.html"
MAINTENANCE_URI = f"/.{SLUG}-maintenance.html"
RETRY_AFTER = 300  # seconds, in the 503's Retry-After ([proxy] maintenance_retry_after)
# Several hosts: the passive health checks of `make nginx-conf` (deploy/nginx_conf.py): a host
# that fails this often within the timeout is left out for that long, and a refused or timed
# out request goes to the next host.
MAX_FAILS, FAIL_TIMEOUT = 3, "10s"
UPSTREAM = f"{ZONE}_edge"  # not make nginx-conf's upstream name: both may be installed

@dataclass(frozen=True)
class Request:
    domain: str
    tls: str
    port: int
    email: str = ""
    directory: str = ""
    ca_bundle: str = ""
    certificate: str = ""
    private_key: str = ""
    static_root: str = ""  # the app's directory: /static/ from its current, else previous, release
    static_max_age: int = 3600
    retry_after: int = RETRY_AFTER
    # several hosts: every host's gunicorn as the proxy host reaches it ("127.0.0.1:8000",
    # "10.0.0.12:8000", "[fd00::12]:8000", "web2.internal:8000"); empty: 127.0.0.1:port alone
    upstreams: tuple[str, ...] = ()


def certificate_paths(request: Request) -> tuple[str, str]:
    if request.tls == "acme":
        live = LETSENCRYPT / "live" / request.domain
        return str(live / "fullchain.pem"), str(live / "privkey.pem")
    return str(STATE / "tls" / "fullchain.pem"), str(STATE / "tls" / "privkey.pem")


def upstream_lines(request: Request) -> list[str]:
    """Several hosts: one upstream of them all, with the passive health checks (a single
    server: none, nginx never leaves out its only server)."""
    if len(request.upstreams) < 2:
        return []
    return ["upstream " + UPSTREAM + " {",  # no f-string: its doubled brace would open a Jinja tag
            *(f"    server {server} max_fails={MAX_FAILS:d} fail_timeout={FAIL_TIMEOUT};" for server in request.upstreams),
            "}", ""]


def proxy_lines(request: Request) -> list[str]:
    several = len(request.upstreams) > 1
    one = request.upstreams[0] if request.upstreams else f"127.0.0.1:{request.port:d}"
    to = f"http://{UPSTREAM if several else one}"
    return [
        "    location / {",
        f"        proxy_pass {to};",
        # a host that refuses, times out or answers 502/503/504: the next one (an idempotent request)
        *(["        proxy_next_upstream error timeout http_502 http_503 http_504;",
           "        proxy_connect_timeout 2s;"] if several else []),
        "        proxy_http_version 1.1;",
        '        proxy_set_header Connection "";',
        "        proxy_set_header Host $host;",
        "        proxy_set_header X-Real-IP $remote_addr;",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "        proxy_set_header X-Forwarded-Proto $scheme;",
        "    }",
    ]


def maintenance_lines(https: bool, retry_after: int = RETRY_AFTER) -> list[str]:
    """503 and the maintenance page on every path but /healthz while the page exists: nginx
    checks at each request, so neither make maintenance nor make live reloads anything, and
    a deploy (which writes this site again) or a reboot leaves the mode as it was."""
    flag = f"${ZONE}_maintenance"
    return [
        f'    set {flag} "";',
        f"    if (-f {MAINTENANCE_PAGE}) " + "{" + f" set {flag} on; " + "}",
        "    if ($uri = /healthz) {" + f' set {flag} ""; ' + "}",
        f"    if ($uri = {MAINTENANCE_URI}) " + "{" + f' set {flag} ""; ' + "}",
        f"    if ({flag}) " + "{ return 503; }",
        f"    error_page 503 {MAINTENANCE_URI};",
        f"    location = {MAINTENANCE_URI} " + "{",
        "        internal;",
        f"        alias {MAINTENANCE_PAGE};",
        "        default_type text/html;",
        "        charset utf-8;",
        f"        add_header Retry-After {retry_after:d} always;",
        '        add_header Cache-Control "no-store" always;',
        *([f'        add_header Strict-Transport-Security "{HSTS}" always;'] if https else []),
        "    }",
    ]


def static_lines(request: Request, https: bool) -> list[str]:
    """/static/ from the current release's static/, else the previous release's (the host
    keeps `previous` beside `current`): a page the previous release rendered still finds its
    files during and after a switch. Text types gzipped; cached by max-age."""
    if not request.static_root:
        return []
    return [
        "    location /static/ {",
        f"        root {request.static_root};",
        "        try_files /current$uri /previous$uri =404;",
        f'        add_header Cache-Control "public, max-age={request.static_max_age:d}";',
        *([f'        add_header Strict-Transport-Security "{HSTS}" always;'] if https else []),
        "        gzip on;",
        "        gzip_vary on;",
        "        gzip_types text/css text/javascript application/javascript application/json image/svg+xml text/plain;",
        "    }",
    ]


def render_site(request: Request) -> str:
    """The app's nginx site: port 80 answers the ACME challenge from the webroot and sends
    the rest to https with its path and query; 443 proxies to gunicorn with HSTS, or answers
    with the maintenance page."""
    name = f"    server_name {request.domain};"
    challenge = [f"    location {CHALLENGE} " + "{", f"        root {WEBROOT};", "        default_type text/plain;",
                 "    }"]
    head = [f"# {SLUG}'s site, written by its edge helper at every deploy: do not edit (make deploy writes it).", ""]
    if request.tls == "off":
        return "\n".join([*head, *upstream_lines(request), "server {", "    listen 80;", name,
                          *maintenance_lines(False, request.retry_after), *challenge,
                          *static_lines(request, False), *proxy_lines(request), "}", ""])
    certificate, key = certificate_paths(request)
    return "\n".join([
        *head, *upstream_lines(request),
        "server {", "    listen 80;", name, *challenge,
        "    location / {", f"        return 301 https://{request.domain}$request_uri;", "    }", "}", "",
        "server {", "    listen 443 ssl;", name,
        f"    ssl_certificate {certificate};", f"    ssl_certificate_key {key};",
        "    ssl_protocols TLSv1.2 TLSv1.3;",
        f"    ssl_session_cache shared:{ZONE}_tls:10m;",
        f'    add_header Strict-Transport-Security "{HSTS}" always;',
        *maintenance_lines(True, request.retry_after), *static_lines(request, True), *proxy_lines(request), "}", "",
    ])


def render_acme_site(domain: str) -> str:
    """Port 80 for DOMAIN while its first certificate is ordered: the challenge, else 404."""
    return "\n".join([
        f"# {SLUG}: the ACME challenge for {domain} while its certificate is ordered (removed after).",
        "server {", "    listen 80;", f"    server_name {domain};",
        f"    location {CHALLENGE} " + "{", f"        root {WEBROOT};", "        default_type text/plain;", "    }",
        "    location / {", "        return 404;", "    }", "}", ""])

