"""The app's code run on the host outside its service (the smoke boot, the release command,
make exec and make shell, jobs run by make run-job, and the app's own command line: backups,
restores, host settings), in the same sandbox as the service.

Where systemd runs the app, such a command runs as a transient unit of the same manager
(`systemd-run --wait --pipe`), with the service unit's sandbox and limits as properties: the
same account, the same read-only system and writable shared/, the same system call filter,
whoever starts it. Its input, output and exit status are the caller's. Elsewhere (a detached
gunicorn) it runs as it is: there is no sandbox to share.
"""
import os
import subprocess

from host.systemd import Service, Units

# Besides the app's own variables (<VARS>_…): a transient unit starts with an empty environment.
PASSED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "HOME")


def properties(units: Units) -> list[str]:
    """The service unit's sandbox and limits, as systemd-run properties (its Environment= is
    the service's own: a command gets the caller's, through --setenv)."""
    return [line for line in units.common() if not line.startswith("Environment=")]


def environment(environ: dict[str, str], prefix: str) -> dict[str, str]:
    """What a command gets of ENVIRON: the app's variables (PREFIX_…) and PASSED."""
    return {name: value for name, value in environ.items() if name.startswith(f"{prefix}_") or name in PASSED}


def has_user_bus(environ: dict[str, str]) -> bool:
    """systemd-run --user --wait needs the user's D-Bus (dbus-user-session), which systemctl
    --user does not: without it a command runs as it is, rather than not at all."""
    return os.path.exists(os.path.join(environ.get("XDG_RUNTIME_DIR", "/nonexistent"), "bus"))


def sandboxed(service: Service, environ: dict[str, str]) -> bool:
    """Whether the app's code runs in a transient unit here (else as it is: as_app)."""
    return service.kind == "system" or (service.kind == "user" and has_user_bus(environ))


def unit_name(units: Units, name: str) -> str:
    """The transient unit's name: NAME (e.g. "smoke": one at a time, under the deploy's lock),
    else one of this process's own."""
    return f"{units.unit}-{name or f'run-{os.getpid()}'}"


def command(service: Service, units: Units, argv: list[str], cwd: str, environ: dict[str, str],
            prefix: str, name: str = "", terminal: bool = False) -> list[str]:
    """ARGV (its program an absolute path) as the app's code runs here, in CWD with the app's
    part of ENVIRON. The values reach systemd-run as arguments, never through a shell.
    TERMINAL: our terminal is the command's (--pty: make shell), rather than our stdin,
    stdout and stderr as they are (--pipe)."""
    if not sandboxed(service, environ):
        return [*service.as_app, *argv]
    env = environment(environ, prefix)
    if service.kind == "system":
        env.pop("HOME", None)  # root's: the app's account has its own (systemd sets it from User=)
    return ["systemd-run", *(["--user"] if service.kind == "user" else []), "--quiet", "--wait",
            "--pty" if terminal else "--pipe", "--collect", "--service-type=exec", f"--unit={unit_name(units, name)}",
            f"--description={units.dist} ({units.env}): a command in the app's sandbox",
            f"--working-directory={cwd}", *(f"--property={line}" for line in properties(units)),
            *(f"--setenv={name}={value}" for name, value in sorted(env.items())), "--", *argv]


def stop(service: Service, units: Units, name: str, wait: bool = True) -> None:
    """Stop the transient unit NAME (command's) if it runs: its manager TERMs what runs there
    and KILLs what outlives the stop timeout. Without WAIT the stop is queued, and the caller
    waits for systemd-run, whose --wait ends with the unit."""
    subprocess.run([*service.systemctl, "stop", *([] if wait else ["--no-block"]), f"{unit_name(units, name)}.service"],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
