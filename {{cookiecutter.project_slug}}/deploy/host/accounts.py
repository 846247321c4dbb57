"""As root, the app runs as an account of its own that owns shared/ (logs, run, data and
local.ini), which is all it may write; releases and state/ stay root's, read-only or closed
to it. What root does in shared/ never follows a link (that account could have planted it):
host/safe.py."""
import pwd
import subprocess
from pathlib import Path

from host import DIST, safe
from host.context import Failure, Host


def ensure_app_user(host: Host) -> None:
    if host.service.kind != "system":
        return
    user = host.service.app_user
    try:
        pwd.getpwnam(user)
    except KeyError:
        made = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                               "--shell", "/usr/sbin/nologin", user], check=False)
        if made.returncode != 0:
            raise Failure(f"cannot create the account {user} for the app") from None
        host.say(f"  created the system account {user}: the app runs as it, not as root")
    account = pwd.getpwnam(user)
    safe.chown_root_leftovers(host.shared, account.pw_uid, account.pw_gid)
    if subprocess.run([*host.service.as_app, "test", "-r", str(host.app / "remote.sh")], check=False).returncode:
        raise Failure(f"the app runs as {user}, which cannot read {host.app} (under /root?): deploy to a directory "
                      f"it can reach, e.g. REMOTE_DIR=/srv/{DIST}")


def app_dir_for(host: Host, path: Path) -> Path:
    """A directory in shared/ for the app to write (backups): made, the app's as root, and
    refused when it is a link."""
    try:
        safe.make_dir(host.shared, str(path.relative_to(host.shared)), 0o700, host.app_owner())
    except safe.Unsafe:
        raise Failure(f"{path} is a link or a file: the deploy will not follow it; remove it") from None
    return path
