"""A release's own settings as the host program reads them: one start of the release's
config.py (`config.py host ENV`, JSON) per command, as the app's account (config.py reads
shared/local.ini, which is the app's). config.py as a script is standard library only: no
app import. A release packed before `host` existed answers through `get` and `workers`."""
import json
import os
import subprocess
from pathlib import Path

from host import PACKAGE
from host.context import Host

# The [proxy] keys the edge helper takes, in the order of its flags (proxy.HELPER_FLAGS).
PROXY_KEYS = ("domain", "tls", "acme_email", "acme_directory", "acme_ca_bundle", "certificate", "private_key",
              "static_max_age", "maintenance_retry_after")
OLD_DEPLOY_KEYS = (["deploy", "release_command", "deploy", "smoke_paths"], ["deploy", "release_command"])


class Unreadable(Exception):
    """config.py did not answer: SAID is its error in one line; INVALID when the settings
    themselves are wrong (the smoke boot then refuses the release in the app's own words)."""

    def __init__(self, said: str, invalid: bool = False):
        super().__init__(said)
        self.said = said
        self.invalid = invalid


def read(host: Host, release: str) -> dict:
    """RELEASE's {"proxy": {key: str}, "release_command": str, "smoke_paths": [str],
    "workers": {...}}; read again only when shared/local.ini changes."""
    key = (release, _stat(host.shared / "local.ini"))
    if key not in host.release_configs:
        host.release_configs[key] = _read(host, release)
    return host.release_configs[key]


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _config_py(host: Host, release: str):
    """A function that runs the release's config.py with ARGS: (returncode, stdout, stderr in one line)."""
    directory = host.releases / release
    found = sorted(directory.glob(f"venv/lib/python*/site-packages/{PACKAGE}/config.py"))
    if not found:
        raise Unreadable(f"release {release} has no {PACKAGE}/config.py in its venv")
    python = str(directory / "venv" / "bin" / "python")

    def run(*args: str) -> tuple[int, str, str]:
        got = subprocess.run([*host.service.as_app, python, "-S", str(found[0]), *args], cwd=directory,
                             capture_output=True, text=True, check=False)
        return got.returncode, got.stdout, " ".join(got.stderr.split())
    return run


def _read(host: Host, release: str) -> dict:
    run = _config_py(host, release)
    code, out, said = run("host", host.settings.env)
    if code == 0:
        return json.loads(out)
    if not said.startswith("usage: config.py get"):
        raise Unreadable(said, invalid="configuration is invalid" in said)
    return _read_older(host, run)


def _read_older(host: Host, run) -> dict:
    """A release packed before `config.py host`: each part as that release asks for it; what
    it predates ([proxy], smoke_paths, workers) is empty."""
    env = host.settings.env
    found = {"proxy": {}, "release_command": "", "smoke_paths": [], "workers": None}
    code, out, said = run("get", env, *[word for key in PROXY_KEYS for word in ("proxy", key)])
    if code == 0:
        found["proxy"] = dict(zip(PROXY_KEYS, [*out.split("\n"), *[""] * len(PROXY_KEYS)]))
    elif "unknown setting [proxy]" not in said:
        raise Unreadable(said, invalid="configuration is invalid" in said)
    for keys in OLD_DEPLOY_KEYS:
        code, out, said = run("get", env, *keys)
        if code == 0:
            lines = [*out.splitlines(), "", ""]
            found["release_command"], found["smoke_paths"] = lines[0], lines[1].split() if len(keys) == 4 else []
            break
    else:
        raise Unreadable(said, invalid="configuration is invalid" in said)
    code, out, said = run("workers", env)
    if code == 0:
        found["workers"] = json.loads(out)
    elif not said.startswith("usage: config.py get"):
        raise Unreadable(said, invalid="configuration is invalid" in said)
    return found
