"""Several hosts: the Makefile hands a target to this script when REMOTE_HOSTS is set.

    python deploy/rollout.py --hosts "h1 h2 h3" [--batch N] deploy|copy|nginx-conf|<command>

where <command> is a host command that is a make target (start, stop, rollback, ...).

It never builds an ssh or scp command itself: for each host it runs the Makefile's own
single-host targets (`make <target> REMOTE_HOST=<host> REMOTE_HOSTS=`), so everything a
single-host deploy checks and prints still holds. `deploy` asks every host what it runs
(its target: Python and platform), packs once per target (hosts of one target, or a
project of pure-Python wheels, share one tarball), then deploys host after host (BATCH
at a time) and stops at the first host that fails; the host program already
refuses a release that fails its smoke boot and switches back one that fails after the
switch. A table then says where every host stands. `nginx-conf` asks every host its
address and has deploy/nginx_conf.py write the snippet.
Standard library only: it runs with the python3 that runs make.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nginx_conf


def host_commands() -> tuple[str, ...]:
    """The make targets run on the host (start, stop, ...): from the host program's registry."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import host.commands  # noqa: F401 (registers them)
    from host.cli import targets
    return tuple(cmd.name for cmd in targets())


HOST_COMMANDS = host_commands()
COMMANDS = ("deploy", "copy", "rollback", *HOST_COMMANDS, "exec", "config-show", "nginx-conf")
HOOK = Path("deploy/hooks/post-deploy")
PACKED = Path("build/rollout-packed.txt")  # what `make pack` packed for the rollout's targets
CURRENT = re.compile(r"^\* (\S+) \(current\)", re.MULTILINE)
MAKE_NOISE = re.compile(r"^g?make(\[\d+\])?: \*\*\* ")  # the sub-make's own "Error 1"
_print_lock = threading.Lock()


def say(text: str = "", err: bool = False) -> None:
    with _print_lock:
        print(text, file=sys.stderr if err else sys.stdout, flush=True)


@dataclass
class Host:
    name: str
    target: str = ""
    release: str = ""  # the tarball packed for its target
    old: str = "?"
    new: str = "?"
    result: str = "not reached"
    seconds: float | None = None
    error: str = ""


class Make:
    """Runs this project's make targets for one host at a time."""

    def __init__(self, make: str) -> None:
        self.command = shlex.split(make) or ["make"]

    def run(self, target: str, host: str | None = None, prefix: str | None = None,
            quiet: bool = False, **variables: str) -> tuple[int, str]:
        """Run `make TARGET VAR=…` (for HOST), streaming its output (prefixed) unless quiet."""
        args = [*self.command, "-s", "--no-print-directory", target, *(f"{k}={v}" for k, v in variables.items())]
        if host is not None:  # the rollout runs the post-deploy hook once, for every host
            args += [f"REMOTE_HOST={host}", "REMOTE_HOSTS=", "NO_POST_DEPLOY=1"]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, bufsize=1)
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            if MAKE_NOISE.match(line):
                continue
            lines.append(line)
            if not quiet:
                say(f"{prefix}{line.rstrip()}" if prefix else line.rstrip())
        return proc.wait(), "".join(lines)

    def current(self, host: str) -> tuple[bool, str]:
        """The release `current` points to on HOST ("none" before the first deploy)."""
        code, out = self.run("releases", host, quiet=True)
        if code != 0:
            return False, last_error(out)
        found = CURRENT.search(out)
        return True, found.group(1) if found else "none"


def last_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    errors = errors or [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[-1].removeprefix("error: ")


def took(started: float) -> str:
    """Seconds since STARTED (time.monotonic()), as every step prints them: 1.234s."""
    return f"{time.monotonic() - started:.3f}s"


def table(hosts: list[Host], old: str, new: str) -> str:
    rows = [("host", "target", old, new, "result", "time")]
    for h in hosts:
        seconds = f"{h.seconds:.1f}s" if h.seconds is not None else "-"
        rows.append((h.name, h.target or "-", h.old, h.new, h.result, seconds))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
                     for row in rows)


def timed_local(make: Make, target: str, stream: bool = False) -> bool:
    """A local step (check-config, test, pack), timed like the single-host deploy prints it."""
    started = time.monotonic()
    code, out = make.run(target, quiet=not stream)
    if code != 0:
        if not stream:
            say(out.rstrip(), err=True)
        say(f"error: make {target} failed; no host was touched", err=True)
        return False
    say(f"  {target}: {took(started)}")
    return True


def where_they_stand(make: Make, hosts: list[Host]) -> bool:
    """Ask every host (in parallel) for its current release; False if one cannot be asked."""
    with ThreadPoolExecutor(max_workers=min(len(hosts), 8)) as pool:
        answers = list(pool.map(lambda h: make.current(h.name), hosts))
    ok = True
    for host, (reached, answer) in zip(hosts, answers):
        if reached:
            host.old = host.new = answer
        else:
            ok = False
            say(f"error: cannot ask {host.name} for its current release: {answer}", err=True)
    return ok


def pack_for_hosts(make: Make, hosts: list[Host]) -> bool:
    """Ask every host for its target (in parallel), then pack once per target."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(len(hosts), 8)) as pool:
        answers = list(pool.map(lambda h: make.run("host-target", h.name, quiet=True), hosts))
    for host, (code, out) in zip(hosts, answers):
        if code != 0:
            say(f"error: {host.name}: {last_error(out)}", err=True)
            return False
        host.target = out.strip().splitlines()[-1]
    targets = " ".join(sorted({h.target for h in hosts}))
    code, out = make.run("pack", quiet=True, PACK_TARGET=targets, PACKED=str(PACKED))
    if code != 0:
        say(out.rstrip(), err=True)
        say("error: make pack failed; no host was touched", err=True)
        return False
    packed = dict(line.split(" ", 1) for line in PACKED.read_text().splitlines())
    for host in hosts:
        host.release = packed[host.target]
    say(f"  pack: {took(started)} "
        f"({len(set(packed.values()))} release(s) for {len(packed)} target(s))")
    return True


def post_deploy(hosts: list[Host], code: int) -> None:
    """deploy/hooks/post-deploy, if there, once per rollout or rollback, ok or not."""
    if not (HOOK.is_file() and os.access(HOOK, os.X_OK)):
        return
    releases = sorted({h.new for h in hosts if h.new not in ("?", "none")})
    env = {**os.environ, "RELEASE": " ".join(releases), "RESULT": "ok" if code == 0 else "failed",
           "HOSTS": " ".join(h.name for h in hosts), "APP_ENV": os.environ.get("APP_ENV", "prod")}
    status = subprocess.run([str(HOOK)], env=env, check=False).returncode
    if status != 0:
        say(f"warning: {HOOK} failed (exit {status}); the rollout's own result stands", err=True)


def deploy(make: Make, hosts: list[Host], batch: int, what: str, release_command: bool = False) -> int:
    code = rollout(make, hosts, batch, what, release_command)
    post_deploy(hosts, code)
    return code


def rollout(make: Make, hosts: list[Host], batch: int, what: str, release_command: bool) -> int:
    say(f"==> {what}: {len(hosts)} hosts ({' '.join(h.name for h in hosts)}), {batch} at a time")
    if not where_they_stand(make, hosts):
        say("error: not every host can be reached; nothing was changed", err=True)
        return 1
    for target in ("check-config", "test"):
        if not timed_local(make, target, stream=target == "test"):
            return 1
    if not pack_for_hosts(make, hosts):
        return 1

    def one(host: Host) -> None:
        host.result = "deploying"
        started = time.monotonic()
        # The release command (migrations) runs once, on the first host, before any switches.
        skip = {"SKIP_RELEASE_COMMAND": "1"} if host is not hosts[0] else {}
        code, out = make.run("host-deploy", host.name, prefix=f"  [{host.name}] ", RELEASE=host.release, **skip)
        host.seconds = time.monotonic() - started
        reached, now = make.current(host.name)
        host.new = now if reached else f"? ({now})"
        if code == 0:
            host.result = "deployed"
        else:
            host.result = "FAILED" if reached and now == host.old else "FAILED, check it"
            host.error = last_error(out)

    started = time.monotonic()
    failed: list[Host] = []
    # With a release command the first host goes alone: it must finish before another switches.
    groups = [hosts[:1], *[hosts[i:i + batch] for i in range(1, len(hosts), batch)]] if release_command \
        else [hosts[i:i + batch] for i in range(0, len(hosts), batch)]
    try:
        for group in groups:
            with ThreadPoolExecutor(max_workers=len(group)) as pool:
                list(pool.map(one, group))
            failed = [h for h in group if h.result != "deployed"]
            if failed:
                break
    except KeyboardInterrupt:
        for h in hosts:
            if h.result == "deploying":
                h.result = "interrupted, check it"
        say("\ninterrupted: every host started finishes or undoes its deploy by itself", err=True)
        say(table(hosts, "old release", "new release"))
        return 130
    say(f"==> rollout summary ({time.monotonic() - started:.1f}s)")
    say(table(hosts, "old release", "new release"))
    if failed:
        for h in failed:
            say(f"error: {h.name}: {h.error}", err=True)
        done = [h.name for h in hosts if h.result == "deployed"]
        left = [h.name for h in hosts if h.result == "not reached"]
        say(f"rollout stopped at {', '.join(h.name for h in failed)}: "
            f"new release on {' '.join(done) or 'no host'}; "
            f"old release kept on {' '.join([h.name for h in failed] + left)}", err=True)
        return 1
    say(f"deployed to all {len(hosts)} hosts")
    return 0


def each_host(make: Make, hosts: list[Host], target: str, packed: bool = False) -> int:
    """Run a single-host target on every host in turn, a header each; fail if any failed."""
    if packed and not pack_for_hosts(make, hosts):
        return 1
    for host in hosts:
        say(f"==> {host.name}")
        code, out = make.run(target, host.name, **({"RELEASE": host.release} if packed else {}))
        host.result = "ok" if code == 0 else "FAILED"
        host.error = "" if code == 0 else last_error(out)
    failed = [h.name for h in hosts if h.result != "ok"]
    if failed:
        say(f"error: make {target} failed on {' '.join(failed)} "
            f"(ok on {' '.join(h.name for h in hosts if h.result == 'ok') or 'no host'})", err=True)
        return 1
    return 0


def rollback(make: Make, hosts: list[Host]) -> int:
    """Roll back every host (not stopping at a failure: each one is asked to go back)."""
    where_they_stand(make, hosts)
    for host in hosts:
        say(f"==> {host.name}")
        started = time.monotonic()
        code, out = make.run("rollback", host.name)
        host.seconds = time.monotonic() - started
        reached, now = make.current(host.name)
        host.new = now if reached else f"? ({now})"
        host.result = "rolled back" if code == 0 else "FAILED"
        host.error = "" if code == 0 else last_error(out)
    say("==> rollback summary")
    say(table(hosts, "was", "now"))
    failed = [h for h in hosts if h.result != "rolled back"]
    for h in failed:
        say(f"error: {h.name}: {h.error}", err=True)
    return 1 if failed else 0


def write_nginx_conf(make: Make, hosts: list[Host], args: argparse.Namespace) -> int:
    """Ask every host its address (and, for a relative REMOTE_DIR without STATIC_ROOT, the
    first host its home), then write the nginx snippet (deploy/nginx_conf.py)."""
    addresses = []
    for host in hosts:
        code, out = make.run("host-address", host.name, quiet=True)
        address = out.strip().splitlines()[-1] if code == 0 and out.strip() else ""
        if not address:
            say(f"error: cannot tell the address of {host.name} (ssh -G): {out.strip()}", err=True)
            return 1
        addresses.append(address)
    home = ""
    if not args.static_root and not args.remote_dir.startswith("/"):  # under the remote user's home
        code, out = make.run("host-home", hosts[0].name, quiet=True)
        home = out.strip().splitlines()[-1] if code == 0 and out.strip() else ""
        if not home.startswith("/"):
            say(f"error: REMOTE_DIR {args.remote_dir} is relative and {hosts[0].name} did not say "
                f"where its home is ({out.strip()}); give STATIC_ROOT=/absolute/path/", err=True)
            return 1
    static = nginx_conf.static_root(args.static_root, args.remote_dir, home)
    out_path = Path(args.out)
    nginx_conf.write(out_path, nginx_conf.render(args.name, addresses, args.port, args.nginx_port, static,
                                                 args.max_fails, args.fail_timeout))
    servers = [nginx_conf.server(a) for a in addresses]
    say(f"wrote {out_path}: upstream {', '.join(s + ':' + args.port for s in servers)}, "
        f"listen {args.nginx_port}, /static/ from {static}")
    return 0


def parse_hosts(text: str) -> list[str]:
    hosts = text.replace(",", " ").split()
    dupes = sorted({h for h in hosts if hosts.count(h) > 1})
    if dupes:
        raise SystemExit(f"REMOTE_HOSTS names {' '.join(dupes)} more than once: one rollout per host at a time")
    bad = [h for h in hosts if not re.fullmatch(r"[A-Za-z0-9._@:\[\]-]+", h)]
    if bad:
        raise SystemExit(f"REMOTE_HOSTS: {' '.join(bad)} is not a host name")
    return hosts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--hosts", required=True, help="REMOTE_HOSTS: names separated by spaces")
    parser.add_argument("--batch", default="1", help="BATCH: how many hosts deploy at once")
    parser.add_argument("--make", default=os.environ.get("MAKE", "make"))
    parser.add_argument("--what", default="deploy", help="the headline of a deploy")
    parser.add_argument("--release-command", choices=("yes", "no"), default="no",
                        help="whether [deploy] release_command is set (the first host then deploys alone)")
    nginx = parser.add_argument_group("nginx-conf")
    nginx.add_argument("--out", default="build/nginx/app.conf")
    nginx.add_argument("--name", default="app")
    nginx.add_argument("--port", default="", help="PORT the app listens on, on every host")
    nginx.add_argument("--nginx-port", default="80", help="NGINX_PORT: port or address:port")
    nginx.add_argument("--static-root", default="", help="STATIC_ROOT (default REMOTE_DIR/current/static/)")
    nginx.add_argument("--remote-dir", default="")
    nginx.add_argument("--max-fails", type=int, default=3)
    nginx.add_argument("--fail-timeout", default="10s")
    args = parser.parse_args(argv)

    names = parse_hosts(args.hosts)
    if not names:
        raise SystemExit("REMOTE_HOSTS is empty: give REMOTE_HOSTS=\"host1 host2\" or REMOTE_HOST=host")
    if not re.fullmatch(r"[1-9][0-9]*", args.batch):
        raise SystemExit(f"BATCH must be a whole number of hosts (1 or more), got '{args.batch}'")
    if args.command == "nginx-conf" and not nginx_conf.LISTEN.fullmatch(args.nginx_port):
        raise SystemExit(f"NGINX_PORT must be a port or address:port, got '{args.nginx_port}'")
    make = Make(args.make)
    # Variables that do not depend on the host (PORT, REMOTE_DIR, ...): checked once, up front.
    code, out = make.run("remote-vars", names[0], quiet=True)
    if code != 0:
        say(out.rstrip(), err=True)
        return 2
    hosts = [Host(name) for name in names]
    if args.command == "deploy":
        return deploy(make, hosts, int(args.batch), args.what, args.release_command == "yes")
    if args.command == "rollback":
        code = rollback(make, hosts)
        post_deploy(hosts, code)
        return code
    if args.command == "nginx-conf":
        return write_nginx_conf(make, hosts, args)
    if args.command == "copy":
        return each_host(make, hosts, "host-copy", packed=True)
    return each_host(make, hosts, args.command)


if __name__ == "__main__":
    sys.exit(main())
