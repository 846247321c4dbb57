"""The edge helper: the one program the deploy user may run as root (sudo, no password).

`make setup-host` copies this file to /usr/local/lib/<slug>-edge/edge.py (root's, with
edge_site.py, the site's text, and edge.json beside it: the deploy user and the app's
directory) and lets that user run it with sudo; nothing broader. `make deploy` runs it to apply the app's nginx site and to obtain
its certificate with certbot (webroot, http-01); `make status` to show them.

    edge.py apply --domain app.example.com --tls acme --port 8000 [--email …] [--directory URL]
                  [--ca-bundle PATH] [--certificate PATH --private-key PATH] [--static-max-age S]
                  [--retry-after S] [--upstream HOST:PORT …]   (several hosts: each one's gunicorn)
    edge.py maintenance on <PAGE     (the page, as bytes on stdin)   edge.py maintenance off
    edge.py status

It trusts nothing it is given: every value is checked (a domain name, a port, an https URL,
paths in the app's directory, opened without following a link, holding PEM blocks only),
nothing reaches a shell, `nginx -t` passes before any reload, and a refusal (a bad value,
nginx's test, the ACME server) leaves the running site as it was. Standard library only.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

if __package__:  # imported as host.edge: the host program, the project's tests
    from host.edge_site import (
        LETSENCRYPT,
        MAINTENANCE_PAGE,
        MAINTENANCE_URI,
        SLUG,
        STATE,
        WEBROOT,
        Request,
        certificate_paths,
        render_acme_site,
        render_site,
    )
else:  # the installed helper (python -I puts no script directory on sys.path): its sibling, root's like it
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from edge_site import (
        LETSENCRYPT,
        MAINTENANCE_PAGE,
        MAINTENANCE_URI,
        SLUG,
        STATE,
        WEBROOT,
        Request,
        certificate_paths,
        render_acme_site,
        render_site,
    )

HERE = Path(__file__).resolve().parent
SETTINGS = HERE / "edge.json"  # written by setup-host: {"user": …, "app_dir": …}
SITE = Path("/etc/nginx/conf.d") / f"{SLUG}.conf"
ACME_SITE = Path("/etc/nginx/conf.d") / f"{SLUG}-acme.conf"  # only while a first certificate is ordered
CERTBOT_DROPIN = Path("/etc/systemd/system/certbot.service.d") / f"{SLUG}-edge.conf"
SYSTEM_CAS = Path("/etc/ssl/certs/ca-certificates.crt")
# Where a CA bundle may be read from besides the app's directory: root's CA places.
CA_PLACES = ("/etc/ssl/", "/usr/local/share/ca-certificates/", "/usr/share/ca-certificates/")

DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
URL = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%/+-]*)?")
PATH = re.compile(r"/[A-Za-z0-9._/+-]*")
HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
MAX_UPSTREAMS = 64
CERT_LABELS = ("CERTIFICATE",)
KEY_LABELS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")


class EdgeError(Exception):
    """One sentence for the user; nothing was changed that serves."""


def under(path: str, top: str) -> bool:
    return os.path.normpath(path) == path and path.startswith(top.rstrip("/") + "/")


def upstream(entry: str) -> str:
    """ENTRY (HOST:PORT, an IPv6 address in brackets) as nginx's upstream server names it, or
    EdgeError: the host an IP address or a host name, the port a number; nothing else reaches
    the nginx config."""
    host, colon, port = entry.rpartition(":")
    if not colon or not port.isdigit() or not 1 <= int(port) <= 65535 or port != str(int(port)):
        raise EdgeError(f"upstream {entry!r} is not HOST:PORT (a port between 1 and 65535)")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        if bracketed or not HOST_NAME.fullmatch(host) or host.replace(".", "").isdigit():
            raise EdgeError(f"upstream {entry!r}: {host!r} is neither an IP address nor a host name") from None
        return f"{host.lower()}:{int(port)}"
    if address.version == 6 and not bracketed:
        raise EdgeError(f"upstream {entry!r}: an IPv6 address goes in brackets ([{host}]:{port})")
    return f"[{address.compressed}]:{int(port)}" if address.version == 6 else f"{address.compressed}:{int(port)}"


def check(given: dict, app_dir: str) -> Request:
    """GIVEN (the command line's values) as a Request, or EdgeError naming every bad value."""
    problems = []
    domain = given.get("domain") or ""
    if not DOMAIN.fullmatch(domain):
        problems.append(f"{domain!r} is not a domain name (lowercase, e.g. app.example.com)")
    tls = given.get("tls") or ""
    if tls not in ("acme", "own", "off"):
        problems.append(f"tls {tls!r} is not acme, own or off")
    port = str(given.get("port") or "")
    if not (port.isdigit() and 1024 <= int(port) <= 65535):
        problems.append(f"port {port!r} is not an unprivileged port (1024 to 65535) for gunicorn on 127.0.0.1")
    email, directory = given.get("email") or "", given.get("directory") or ""
    if email and not EMAIL.fullmatch(email):
        problems.append(f"{email!r} is not an e-mail address")
    if tls == "acme" and not URL.fullmatch(directory):
        problems.append(f"the ACME directory {directory!r} is not an https:// URL")
    paths = {"ca_bundle": given.get("ca_bundle") or ""}
    if tls == "own":
        paths |= {"certificate": given.get("certificate") or "", "private_key": given.get("private_key") or ""}
        problems += [f"tls own needs {name}" for name, value in paths.items() if name != "ca_bundle" and not value]
    for name, value in paths.items():
        if not value:
            continue
        places = (app_dir, *CA_PLACES) if name == "ca_bundle" else (app_dir,)
        if not PATH.fullmatch(value) or not any(under(value, place) for place in places):
            problems.append(f"{name} {value!r} is not a plain absolute path under {' or '.join(places)}")
    max_age = str(given.get("static_max_age") or "3600")
    if not (max_age.isdigit() and int(max_age) <= 10 * 365 * 86400):
        problems.append(f"static_max_age {max_age!r} is not a number of seconds (at most 10 years)")
    retry_after = str(given.get("retry_after") or "300")
    if not (retry_after.isdigit() and int(retry_after) <= 7 * 86400):
        problems.append(f"retry_after {retry_after!r} is not a number of seconds (at most a week)")
    upstreams = []
    for entry in given.get("upstream") or []:
        try:
            upstreams.append(upstream(entry))
        except EdgeError as exc:
            problems.append(str(exc))
    if len(upstreams) > MAX_UPSTREAMS:
        problems.append(f"{len(upstreams)} upstreams: at most {MAX_UPSTREAMS}")
    if not PATH.fullmatch(app_dir) or os.path.normpath(app_dir) != app_dir:
        problems.append(f"the app's directory {app_dir!r} (edge.json) is not a plain absolute path")
    if problems:
        raise EdgeError("; ".join(problems))
    return Request(domain, tls, int(port), email, directory if tls == "acme" else "", **paths, static_root=app_dir,
                   static_max_age=int(max_age), retry_after=int(retry_after), upstreams=tuple(upstreams))


def read_nofollow(path: str, limit: int = 1 << 20) -> bytes:
    """The regular file at PATH, each component opened without following a link (the deploy
    user owns the app's directory: a link there could point at any of root's files)."""
    parts = [p for p in path.split("/") if p]
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    except OSError as exc:
        raise EdgeError(f"cannot read {path} ({exc.strerror}; a link is never followed)") from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise EdgeError(f"{path} is not a regular file")
    with os.fdopen(file_fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise EdgeError(f"{path} is larger than {limit} bytes: not a certificate or key")
    return data


def pem_blocks(data: bytes, labels: tuple[str, ...], path: str) -> str:
    """Only the PEM blocks of LABELS in DATA (all else dropped), or EdgeError if there is none."""
    text = data.decode("ascii", errors="replace")
    blocks = [m[0] for m in re.finditer(r"-----BEGIN ([A-Z ]+)-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END \1-----", text)
              if m[1] in labels]
    if not blocks:
        raise EdgeError(f"{path} holds no PEM {' or '.join(labels)} block")
    return "\n".join(block.replace("\r\n", "\n") for block in blocks) + "\n"


# --- changes on this host ------------------------------------------------------------------


def write_file(path: Path, text: str, mode: int = 0o644) -> bool:
    """Replace PATH (root's) atomically when TEXT differs; True when it changed."""
    try:
        if path.read_text() == text and stat.S_IMODE(path.stat().st_mode) == mode:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        os.fchmod(handle.fileno(), mode)
    os.replace(tmp, path)
    return True


def run(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def nginx_test() -> str:
    """'' when nginx accepts its whole configuration, else its first error line."""
    said = run("nginx", "-t", "-q")
    if said.returncode == 0:
        return ""
    errors = [line for line in said.stderr.splitlines() if "[emerg]" in line] or said.stderr.splitlines() or ["?"]
    return errors[0].strip()


def nginx_workers() -> tuple[str, set[str]]:
    """nginx's master pid (its pidfile) and its children's pids, or ('', set())."""
    try:
        pid = Path("/run/nginx.pid").read_text().strip()
        return pid, set(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except (OSError, ValueError):
        return "", set()


def reload_nginx(wait: float = 5.0) -> None:
    """A graceful reload (old workers finish their connections), started when it is not
    running; then wait until new workers run: a reload's signal returns before nginx acts."""
    master, before = nginx_workers()
    if not Path("/run/systemd/system").is_dir():  # no systemd: nginx's own signals
        said = run("nginx", "-s", "reload") if master.isdigit() and Path(f"/proc/{master}").exists() else run("nginx")
    elif run("systemctl", "is-active", "--quiet", "nginx").returncode == 0:
        said = run("systemctl", "reload", "nginx")
    else:
        said = run("systemctl", "start", "nginx")
    if said.returncode != 0:
        raise EdgeError(f"nginx did not reload: {(said.stderr or said.stdout).strip()}")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        now, workers = nginx_workers()
        if now and workers and (now != master or workers - before):
            return
        time.sleep(0.02)


def install_site(path: Path, text: str, what: str) -> bool:
    """Put TEXT at PATH, keep it only if `nginx -t` passes (else put back what was there)."""
    old = path.read_text() if path.exists() else None
    if old == text:
        return False
    write_file(path, text)
    problem = nginx_test()
    if problem:
        if old is None:
            path.unlink()
        else:
            write_file(path, old)
        raise EdgeError(f"nginx refused {what} ({problem}); the running site is unchanged")
    return True


def ca_bundle(request: Request, changed: list[str]) -> dict:
    """certbot's environment: REQUESTS_CA_BUNDLE = the system's CAs and the given ones, in
    root's own copy; certbot's renewals (its systemd timer) get the same."""
    if not request.ca_bundle:
        return {}
    given = pem_blocks(read_nofollow(request.ca_bundle), CERT_LABELS, request.ca_bundle)
    system = SYSTEM_CAS.read_text() if SYSTEM_CAS.exists() else ""
    bundle = STATE / "acme-ca.pem"
    if write_file(bundle, system + given):
        changed.append(f"CA bundle for the ACME server: {bundle}")
    dropin = f"[Service]\nEnvironment=REQUESTS_CA_BUNDLE={bundle}\n"
    if Path("/run/systemd/system").is_dir() and write_file(CERTBOT_DROPIN, dropin):
        run("systemctl", "daemon-reload")
        changed.append(f"certbot's renewals trust it: {CERTBOT_DROPIN}")
    return {"REQUESTS_CA_BUNDLE": str(bundle)}


def has_certificate(request: Request) -> bool:
    """A certificate for the domain from this ACME directory (a new directory: a new order)."""
    renewal = LETSENCRYPT / "renewal" / f"{request.domain}.conf"
    if not (LETSENCRYPT / "live" / request.domain / "fullchain.pem").exists() or not renewal.exists():
        return False
    return any(line.split("=", 1)[1].strip() == request.directory
               for line in renewal.read_text().splitlines() if line.split("=", 1)[0].strip() == "server")


def obtain(request: Request, env: dict, changed: list[str]) -> None:
    """certbot certonly --webroot for the domain, nginx answering the challenge meanwhile."""
    WEBROOT.mkdir(parents=True, exist_ok=True)
    install_site(ACME_SITE, render_acme_site(request.domain), f"the ACME challenge site for {request.domain}")
    try:
        reload_nginx()
        said = run("certbot", "certonly", "--non-interactive", "--agree-tos", "--webroot", "-w", str(WEBROOT),
                   "-d", request.domain, "--cert-name", request.domain, "--server", request.directory,
                   *(["--email", request.email] if request.email else ["--register-unsafely-without-email"]),
                   env=env)
    finally:
        ACME_SITE.unlink(missing_ok=True)
        reload_nginx()
    if said.returncode != 0:
        lines = [line.strip() for line in (said.stderr + said.stdout).splitlines() if line.strip()
                 and not line.startswith(("Saving debug log", "Ask for help", "Some challenges"))]
        why = next((line for line in lines if "Detail:" in line or "rror" in line), lines[-1] if lines else "?")
        raise EdgeError(f"the ACME server {request.directory} gave no certificate for {request.domain} ({why}); "
                        "the running site is unchanged")
    changed.append(f"certificate for {request.domain} from {request.directory}")


def own_certificate(request: Request, changed: list[str]) -> None:
    """The user's certificate and key, checked and copied where only root writes."""
    chain = pem_blocks(read_nofollow(request.certificate), CERT_LABELS, request.certificate)
    key = pem_blocks(read_nofollow(request.private_key), KEY_LABELS, request.private_key)
    certificate, private = certificate_paths(request)
    (STATE / "tls").mkdir(parents=True, exist_ok=True, mode=0o700)
    if write_file(Path(private), key, 0o600) | write_file(Path(certificate), chain):
        changed.append(f"certificate and key for {request.domain} copied to {STATE / 'tls'}")


def apply(request: Request) -> list[str]:
    changed: list[str] = []
    if request.tls == "acme":
        env = ca_bundle(request, changed)
        if not has_certificate(request):
            obtain(request, env, changed)
    elif request.tls == "own":
        own_certificate(request, changed)
    if install_site(SITE, render_site(request), f"the site for {request.domain}"):
        to = ", ".join(request.upstreams) if request.upstreams else f"127.0.0.1:{request.port}"
        changed.append(f"nginx site {SITE} ({request.tls}, to {to})")
    if changed:
        reload_nginx()
    write_file(STATE / "applied.json", json.dumps(request.__dict__, sort_keys=True) + "\n")
    return changed


def maintenance(on: bool, page: bytes, limit: int = 256 * 1024) -> str:
    """make maintenance: PAGE (UTF-8 HTML, data only: nginx serves the file as it is) becomes
    the 503 page, which switches the mode on; make live removes it."""
    if not on:
        if not MAINTENANCE_PAGE.exists():
            return "maintenance was off"
        MAINTENANCE_PAGE.unlink()
        return "maintenance off: the app answers again"
    if not SITE.exists() or MAINTENANCE_URI not in SITE.read_text():
        raise EdgeError(f"no nginx site of {SLUG} with maintenance mode is applied here yet: make deploy first")
    if len(page) > limit:
        raise EdgeError(f"the maintenance page is larger than {limit} bytes")
    try:
        text = page.decode("utf-8")
    except UnicodeDecodeError:
        raise EdgeError("the maintenance page is not UTF-8 text") from None
    MAINTENANCE_PAGE.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    write_file(MAINTENANCE_PAGE, text)  # a whole page or none: written aside, then renamed
    return "maintenance on: every path but /healthz answers 503 with the page (make live ends it)"


def expiry(path: str) -> str:
    """A certificate file's notAfter, as OpenSSL writes it ('' when it cannot be read)."""
    try:
        import ssl
        return ssl._ssl._test_decode_cert(path)["notAfter"]  # the stdlib's own decoder, no other parser here
    except (ImportError, AttributeError, OSError, ValueError, KeyError):
        return ""


def status() -> dict:
    try:
        applied = json.loads((STATE / "applied.json").read_text())
    except (OSError, ValueError):
        return {"domain": ""}
    request = Request(**applied)
    answer = {"domain": request.domain, "tls": request.tls}
    if request.tls != "off":
        answer["certificate_expires"] = expiry(certificate_paths(request)[0])
    try:
        since = time.gmtime(MAINTENANCE_PAGE.stat().st_mtime)
        answer["maintenance"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", since)
    except OSError:
        answer["maintenance"] = ""
    return answer


def main(argv: list[str]) -> int:
    top = argparse.ArgumentParser(prog="edge.py", description=f"{SLUG}'s nginx site and certificates")
    commands = top.add_subparsers(dest="command", required=True)
    given = commands.add_parser("apply")
    for name in ("domain", "tls", "port", "email", "directory", "ca-bundle", "certificate", "private-key",
                 "static-max-age", "retry-after"):
        given.add_argument(f"--{name}", default="")
    given.add_argument("--upstream", action="append", default=[])  # several hosts: each HOST:PORT
    commands.add_parser("maintenance").add_argument("mode", choices=("on", "off"))
    commands.add_parser("status")
    args = top.parse_args(argv)
    if os.geteuid() != 0:
        print("error: the edge helper runs as root (sudo)", file=sys.stderr)
        return 1
    try:
        settings = json.loads(SETTINGS.read_text())
        if args.command == "status":
            print(json.dumps(status()))
            return 0
        if args.command == "maintenance":
            print(f"  edge: {maintenance(args.mode == 'on', sys.stdin.buffer.read(256 * 1024 + 1))}")
            return 0
        request = check(vars(args), settings["app_dir"])
        changed = apply(request)
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: the edge helper could not finish: {exc}", file=sys.stderr)
        return 1
    for line in changed:
        print(f"  edge: {line}")
    if not changed:
        print(f"  edge: nginx site for {request.domain} unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
