"""HTTPS at the edge, the host program's side: `make setup-host` (as root, once) makes the
host ready for an ordinary deploy user; `make deploy` with a [proxy] domain asks the edge
helper (host/edge.py, installed root's by setup-host) to apply the site and obtain the
certificate; `make status` shows them. The helper is all that runs as root for a deploy."""
import argparse
import html
import json
import os
import pkgutil
import pwd
import re
import shutil
import stat
import string
import subprocess
import sys
import time
from pathlib import Path

from host import DIST, release_config
from host.cli import arg, command
from host.context import Failure, Host
from host.release_config import PROXY_KEYS

HELPER_DIR = Path("/usr/local/lib") / f"{DIST}-edge"
HELPER = HELPER_DIR / "edge.py"
SUDOERS = Path("/etc/sudoers.d") / f"{DIST}-edge"  # no dot in the name: sudo skips such files
RENEW_HOOK = Path("/etc/letsencrypt/renewal-hooks/deploy") / f"{DIST}-reload-nginx"
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
PACKAGES = (("nginx", "nginx"), ("certbot", "certbot"), ("sudo", "sudo"))
SBIN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HELPER_FLAGS = ("--domain", "--tls", "--email", "--directory", "--ca-bundle", "--certificate", "--private-key",
                "--static-max-age", "--retry-after")


# --- make setup-host, as root -----------------------------------------------------------------


def write_root_file(path: Path, data: bytes, mode: int) -> bool:
    """PATH (in root's directories) holding DATA with MODE; True when that changed it."""
    try:
        st = path.lstat()
        if path.read_bytes() == data and st.st_uid == 0 and (st.st_mode & 0o7777) == mode:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        os.fchmod(handle.fileno(), mode)
    os.replace(tmp, path)
    return True


def missing_packages() -> list[str]:
    return [package for tool, package in PACKAGES if shutil.which(tool, path=SBIN) is None]


def install_packages(say) -> list[str]:
    missing = missing_packages()
    if not missing:
        return []
    line = f"apt-get install --no-install-recommends {' '.join(missing)}"
    if shutil.which("apt-get", path=SBIN) is None:
        raise Failure(f"this host lacks {', '.join(missing)} and has no apt-get: install them, then make setup-host again")
    say(f"  installing {' '.join(missing)} from the host's apt sources")
    said = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                          capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PATH": SBIN})
    if said.returncode != 0 or missing_packages():
        last = (said.stderr.strip().splitlines() or said.stdout.strip().splitlines() or ["?"])[-1]
        raise Failure(f"apt-get could not install {' '.join(missing)} ({last}): run `apt-get update && {line}` "
                      "on the host, then make setup-host again")
    return [f"installed {' '.join(missing)}"]


def ensure_user(user: str) -> list[str]:
    changed = []
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        made = subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--", user], capture_output=True,
                              text=True, check=False, env={**os.environ, "PATH": SBIN})
        if made.returncode != 0:
            raise Failure(f"cannot create the user {user}: {made.stderr.strip()}") from None
        account = pwd.getpwnam(user)
        changed.append(f"created the user {user} (home {account.pw_dir})")
    linger = Path("/var/lib/systemd/linger") / user
    if not linger.exists():
        if subprocess.run(["loginctl", "enable-linger", user], capture_output=True, check=False).returncode != 0:
            linger.parent.mkdir(parents=True, exist_ok=True)
            linger.touch()
        changed.append(f"lingering on for {user}: its user manager (and the app's unit) starts at boot")
    # Its logins: root's keys when it has none. As the user, by a fixed script (nothing pasted
    # into it): root writing into a home the user owns could follow a link planted there.
    keys = Path("/root/.ssh/authorized_keys")
    as_user = ["runuser", "-u", user, "--"]
    has_keys = subprocess.run([*as_user, "test", "-e", f"{account.pw_dir}/.ssh/authorized_keys"], check=False)
    if has_keys.returncode != 0 and keys.is_file():
        script = 'umask 077 && mkdir -p "$1/.ssh" && cat >"$1/.ssh/authorized_keys"'
        copied = subprocess.run([*as_user, "sh", "-c", script, "sh", account.pw_dir], input=keys.read_bytes(),
                                capture_output=True, check=False)
        if copied.returncode != 0:
            raise Failure(f"cannot give {user} root's ssh keys: {copied.stderr.decode(errors='replace').strip()}")
        changed.append(f"{user} logs in with root's ssh keys ({keys})")
    return changed


def helper_source() -> bytes:
    """host/edge.py with this interpreter in its shebang (-I: no user site, no environment)."""
    source = pkgutil.get_data("host", "edge.py")
    return f"#!{os.path.realpath(sys.executable)} -I\n".encode() + source


def install_helper(user: str, app_dir: str) -> list[str]:
    changed = []
    for path in (HELPER_DIR, Path("/etc") / f"{DIST}-edge"):
        if not path.is_dir():
            path.mkdir(mode=0o755, parents=True)
            changed.append(f"made {path}")
        os.chown(path, 0, 0)
        path.chmod(0o755)
    site = write_root_file(HELPER_DIR / "edge_site.py", pkgutil.get_data("host", "edge_site.py"), 0o644)
    if write_root_file(HELPER, helper_source(), 0o755) or site:
        changed.append(f"installed the edge helper {HELPER}")
    settings = json.dumps({"user": user, "app_dir": app_dir}, sort_keys=True).encode() + b"\n"
    if write_root_file(HELPER_DIR / "edge.json", settings, 0o644):
        changed.append(f"edge helper settings: {user}, app directory {app_dir}")
    rule = f"{user} ALL=(root) NOPASSWD: {HELPER}\n".encode()
    if SUDOERS.exists() and SUDOERS.read_bytes() == rule and (SUDOERS.stat().st_mode & 0o777) == 0o440:
        return changed
    tmp = SUDOERS.with_name(f".{SUDOERS.name}.new")  # a dot: sudo never reads it meanwhile
    write_root_file(tmp, rule, 0o440)
    checked = subprocess.run(["visudo", "-c", "-q", "-f", str(tmp)], capture_output=True, text=True, check=False,
                             env={**os.environ, "PATH": SBIN})
    if checked.returncode != 0:
        tmp.unlink()
        raise Failure(f"visudo refused the rule for {user}: {(checked.stderr or checked.stdout).strip()}")
    os.replace(tmp, SUDOERS)
    changed.append(f"{user} may run {HELPER} as root without a password, and nothing else ({SUDOERS})")
    return changed


def ensure_renewal_hook() -> list[str]:
    hook = b"#!/bin/sh\n# certbot runs this after a renewal: nginx serves the new certificate.\nsystemctl reload nginx\n"
    if write_root_file(RENEW_HOOK, hook, 0o755):
        return [f"certbot reloads nginx after a renewal ({RENEW_HOOK})"]
    return []


def ensure_nginx_running() -> list[str]:
    if not Path("/run/systemd/system").is_dir():
        return []
    active = subprocess.run(["systemctl", "is-active", "--quiet", "nginx"], check=False).returncode == 0
    enabled = subprocess.run(["systemctl", "is-enabled", "--quiet", "nginx"], check=False).returncode == 0
    if active and enabled:
        return []
    subprocess.run(["systemctl", "enable", "--now", "--quiet", "nginx"], check=False)
    return ["nginx enabled and started"]


def deploy_dir(user: str, given: str) -> str:
    """REMOTE_DIR as the deploy user has it: relative means under its home."""
    home = pwd.getpwnam(user).pw_dir
    return os.path.normpath(given if given.startswith("/") else os.path.join(home, given))


@command("setup_host", "as root, once: nginx, certbot, the DEPLOY_USER and the edge helper it may run with sudo",
         target=True, context=False)
def cmd_setup_host(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        Host.say(line)

    user = os.environ.get("DEPLOY_USER", "")
    try:
        if os.geteuid() != 0:
            raise Failure("setup-host runs as root: give REMOTE_USER=root (and DEPLOY_USER=the deploy user)")
        if not USER_NAME.fullmatch(user) or user == "root":
            raise Failure(f"DEPLOY_USER {user!r} is not an ordinary user name (e.g. deploy): the user the app is "
                          "deployed as, made when missing")
        changed = install_packages(say) + ensure_user(user)
        changed += install_helper(user, deploy_dir(user, os.environ.get("DEPLOY_DIR") or f"apps/{DIST}"))
        changed += ensure_renewal_hook() + ensure_nginx_running()
    except Failure as failure:
        print(f"error: {failure}", file=sys.stderr)
        return failure.status
    for line in changed:
        say(f"  changed: {line}")
    say(f"setup-host: {len(changed)} change(s)" if changed else "setup-host: nothing to change, the host was ready")
    return 0


# --- make deploy and make status, as the deploy user --------------------------------------------


def release_proxy(host: Host, release: str) -> dict:
    """The release's own [proxy] settings, read as the app's account: on a root deploy's
    first run, that account is made here (activate would make it next)."""
    from host.accounts import ensure_app_user
    ensure_app_user(host)
    try:
        return release_config.read(host, release)["proxy"]
    except release_config.Unreadable as error:
        if error.invalid:
            return {}  # the smoke boot, next, refuses the release in the app's own words; the site is untouched
        raise Failure(f"cannot read [proxy] of {release} ({error.said})") from None


def helper_argv(*args: str) -> list[str]:
    return [str(HELPER), *args] if os.geteuid() == 0 else ["sudo", "-n", str(HELPER), *args]


def apply_edge(host: Host, release: str) -> None:
    """With a [proxy] domain: the helper writes the nginx site (and obtains the certificate
    on the first deploy) before the switch; a refusal fails the deploy with the old site and
    release serving."""
    proxy = release_proxy(host, release)
    if not proxy.get("domain"):
        return
    if host.settings.edge_proxy:  # several hosts: another one holds the site and balances over this one
        host.say(f"  edge: the site and certificate of {proxy['domain']} are on {host.settings.edge_proxy}; gunicorn "
                 f"here answers it on {host.settings.bind_host}:{host.settings.port}")
        return
    if not HELPER.exists():
        user = "deploy" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
        raise Failure(f"[proxy] domain is {proxy['domain']}, but this host has no edge helper ({HELPER}): run "
                      f"make setup-host REMOTE_USER=root DEPLOY_USER={user} once")
    if host.settings.port is None:
        raise Failure("PORT is not set: the nginx site needs gunicorn's port")
    words = [word for flag, key in zip(HELPER_FLAGS, PROXY_KEYS) for word in (flag, proxy[key])]
    words += [word for upstream in host.settings.upstreams for word in ("--upstream", upstream)]
    said = subprocess.run(helper_argv("apply", *words, "--port", str(host.settings.port)), capture_output=True,
                          text=True, check=False, stdin=subprocess.DEVNULL)
    for line in said.stdout.splitlines():
        host.say(line)
    if said.returncode == 0:
        open_to_nginx(host)
    else:
        (host.releases / release / ".refused").touch()
        why = (said.stderr.strip().splitlines() or ["the edge helper failed"])[-1].removeprefix("error: ")
        raise Failure(f"{why} (release {release} not activated; {host.current_id() or 'nothing'} still serving)")


def open_to_nginx(host: Host) -> None:
    """nginx, as its own user, reads /static/ from the releases: every directory from
    releases/ up to / needs o+x (pass through, no listing). Ours get it; a link is never
    changed through; shared/ and state/ (the app's data and secrets, root's state) stay 0700."""
    path = host.releases
    for directory in (path, *path.parents):
        st = directory.lstat()
        if st.st_mode & 0o001 or stat.S_ISLNK(st.st_mode):
            continue
        if st.st_uid != os.geteuid():
            host.say(f"warning: {directory} is closed to other accounts: nginx cannot serve /static/ from the "
                     "releases (give that directory o+x)")
            return
        os.chmod(directory, stat.S_IMODE(st.st_mode) | 0o001)
        host.say(f"  {directory}: o+x, so that nginx passes through to the releases' static/ (it lists nothing)")


def edge_status(host: Host) -> None:
    if host.settings.edge_proxy:
        host.say(f"proxy: behind the nginx of {host.settings.edge_proxy} (its make status shows the certificate), "
                 f"gunicorn on {host.settings.bind_host}:{host.settings.port}")
        return
    if not HELPER.exists():
        return
    said = subprocess.run(helper_argv("status"), capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)
    try:
        answer = json.loads(said.stdout)
    except ValueError:
        host.say(f"proxy: unknown ({said.stderr.strip() or 'the edge helper did not answer'})")
        return
    if answer.get("domain"):
        expires = answer.get("certificate_expires")
        scheme = "http" if answer["tls"] == "off" else "https"
        host.say(f"proxy: {scheme}://{answer['domain']}/ (tls {answer['tls']}"
                 + (f", certificate expires {expires})" if expires else ")"))
        since = answer.get("maintenance")
        host.say(f"maintenance: on since {since} (make live ends it)" if since else "maintenance: off")


# --- make maintenance and make live ------------------------------------------------------------

PAGE = Path("deploy") / "maintenance.html"  # in each release: the project's page, the user's to edit


def render_page(template: str, message: str, since: str) -> str:
    """The release's maintenance page with $message and $since put in, HTML-escaped (any
    other $ is left as it is)."""
    return string.Template(template).safe_substitute(message=html.escape(message), since=html.escape(since))


def maintenance_message(given: str) -> str:
    message = given.strip()
    if not message:
        raise Failure('say what the visitors read: make maintenance MESSAGE="Back at 14:00 UTC: we are moving '
                      'the database"', 2)
    if len(message) > 500 or not message.isprintable():
        raise Failure("MESSAGE must be one line of printable text, at most 500 characters", 2)
    return message


def run_helper(host: Host, *args: str, page: str | None = None) -> None:
    said = subprocess.run(helper_argv(*args), input=page, capture_output=True, text=True, check=False,
                          **({} if page is not None else {"stdin": subprocess.DEVNULL}))
    for line in said.stdout.splitlines():
        host.say(line)
    if said.returncode != 0:
        raise Failure((said.stderr.strip().splitlines() or ["the edge helper failed"])[-1].removeprefix("error: "))


@command("maintenance", "with a [proxy] domain: every path but /healthz answers 503 with deploy/maintenance.html "
         "showing MESSAGE, until make live", arg("message", nargs="?", default=""), target=True)
def cmd_maintenance(host: Host, args) -> None:
    message = maintenance_message(args.message)
    release = host.need_current("make deploy first, then make maintenance")
    if not release_proxy(host, release).get("domain"):
        raise Failure("make maintenance needs a [proxy] domain: without one, nginx does not answer in front of the "
                      f"app (release {release} has none; set [proxy] domain and make deploy first)")
    if not HELPER.exists():
        raise Failure(f"this host has no edge helper ({HELPER}): run make setup-host REMOTE_USER=root DEPLOY_USER=… once")
    template = host.releases / release / PAGE
    try:
        text = template.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Failure(f"cannot read the maintenance page {template} ({exc}): deploy a release that has {PAGE}") from None
    since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    run_helper(host, "maintenance", "on", page=render_page(text, message, since))


@command("live", "end make maintenance: every path reaches the app again", target=True)
def cmd_live(host: Host, args) -> None:
    if not HELPER.exists():
        raise Failure(f"this host has no edge helper ({HELPER}), so no maintenance mode to end")
    run_helper(host, "maintenance", "off")
