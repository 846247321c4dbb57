"""Deploy, copy and roll back one host or many: a single host is a rollout of one.

A rollout asks every host what it runs (target and current release, in parallel), tests
and packs once per target side by side, then deploys host after host (BATCH at a time) and
stops at the first host that fails: the host program already refuses a release that fails
its smoke boot, and switches back one that fails after the switch. With a release command
(migrations) the first host goes alone, and only it runs the command. A table then says
where every host stands (several hosts), and the post-deploy hook runs once.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

from ship import local
from ship.messages import ShipError, message
from ship.remote import Remote, deploy_who, say
from ship.settings import Settings

# fail_timeout of the proxy's upstream (host/edge_site.py, nginx_conf.py): how long a host that
# failed its requests stays out of the proxy's rotation.
PASSIVE_CHECK_SECONDS = 10


@dataclass
class Host:
    name: str
    remote: Remote
    target: str = ""
    release: object = None  # the tarball packed for its target
    lean: object = None  # its lean upload, made while the tests ran (None: made when it is sent)
    old: str = "?"
    new: str = "?"
    result: str = "not reached"
    seconds: float | None = None
    error: str = ""
    restarted: bool = False  # gunicorn there stopped and started (a new address), not handed over


def table(hosts: list[Host], old: str, new: str) -> str:
    rows = [("host", "target", old, new, "result", "time")]
    for h in hosts:
        seconds = f"{h.seconds:.1f}s" if h.seconds is not None else "-"
        rows.append((h.name, h.target or "-", h.old, h.new, h.result, seconds))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
                     for row in rows)


def groups(hosts: list[Host], batch: int, first_alone: bool) -> list[list[Host]]:
    """Batches of BATCH hosts; the first host alone when it runs the release command."""
    if first_alone:
        return [hosts[:1], *[hosts[i:i + batch] for i in range(1, len(hosts), batch)]]
    return [hosts[i:i + batch] for i in range(0, len(hosts), batch)]


class Fleet:
    """The hosts of one target, each with its own shared ssh connection."""

    def __init__(self, settings: Settings, names: list[str]):
        self.settings, self.several = settings, bool(settings.hosts)
        who = deploy_who()
        self.hosts = [Host(n, Remote(settings, n, who, prefix=f"  [{n}] " if self.several else "")) for n in names]
        self.stack = ExitStack()

    def __enter__(self):
        for host in self.hosts:
            self.stack.enter_context(host.remote)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def each(self, work, hosts: list[Host] | None = None) -> list:
        hosts = self.hosts if hosts is None else hosts
        if len(hosts) == 1:
            return [work(hosts[0])]
        with ThreadPoolExecutor(max_workers=min(len(hosts), 8)) as pool:
            return list(pool.map(work, hosts))

    def reach(self) -> None:
        """Every host's facts: its target and current release. Any host that cannot take a
        release stops everything before anything is packed or sent."""
        def ask(host: Host):
            try:
                facts = local.reach(host.remote, self.settings.project.min_python)
            except ShipError as refused:
                return refused
            host.target, host.old = facts["target"], facts.get("current") or "none"
            host.new = host.old
            return None
        refusals = [r for r in self.each(ask) if r is not None]
        if refusals:
            if self.several:
                for refused in refusals:
                    if str(refused):
                        say(f"error: {refused}", err=True)
                raise ShipError(message("not_every_host"), 1)
            raise refusals[0]

    def headline(self) -> None:
        p, s = self.settings.project, self.settings
        what = f"{p.name} {p.version} to {s['REMOTE_DIR']}, port {s['PORT']}, {s.env}"
        if self.several:
            say(f"==> {what}: {len(self.hosts)} hosts ({' '.join(h.name for h in self.hosts)}), "
                f"{s['BATCH']} at a time")
        else:
            h = self.hosts[0]
            say(f"==> {p.name} {p.version} to {h.remote.target}:{s['REMOTE_DIR']}, port {s['PORT']}, {s.env}, "
                f"for {h.target}")

    def packed(self, with_tests: bool) -> None:
        def lean_uploads(packed: dict) -> None:
            leaned = local.lean_all({h.remote.host: packed[h.target] for h in self.hosts})
            for host in self.hosts:
                host.lean = leaned[host.remote.host]
        releases = local.test_and_pack(self.settings, [h.target for h in self.hosts], with_tests, then=lean_uploads)
        for host in self.hosts:
            host.release = releases[host.target]


def deploy(settings: Settings, names: list[str]) -> int:
    s = settings
    if s["DRY_RUN"] == "1":
        from ship.plan import plan
        return plan(s, names)
    if len(names) > 1 and s.setting("database", "url").startswith("sqlite"):
        raise ShipError(message("sqlite_hosts", env=s.env))
    with Fleet(settings, names) as fleet:
        if fleet.several:
            fleet.headline()
        fleet.reach()
        if not fleet.several:
            fleet.headline()
        code = 1
        try:
            fleet.packed(with_tests=True)
            code = rollout(fleet, int(s["BATCH"]), bool(s.setting("deploy", "release_command").strip()))
        finally:
            local.post_deploy(s, "deploy", [h.new for h in fleet.hosts], names, code)
        return code


def deploy_one(fleet: Fleet, host: Host, skip_release_command: bool) -> int:
    host.result = "deploying"
    started = time.monotonic()
    env = {"SKIP_RELEASE_COMMAND": "1"} if skip_release_command else {}
    try:
        answer = local.send_release(fleet.settings, host.remote, host.release, "deploy", env=env, leaned=host.lean)
        code, result = answer.status, answer.result
    except ShipError as failed:
        if str(failed):
            say(f"error: {failed}", err=True)
        code, result = failed.status, {}
    host.seconds = time.monotonic() - started
    if not fleet.several:
        say(f"  host: {host.seconds:.3f}s")
    host.new = result.get("to") or ("?" if code else host.new)
    host.restarted = bool(result.get("restarted"))
    if code == 0:
        host.result = "deployed"
    else:
        host.result = "FAILED" if result.get("to") == host.old else "FAILED, check it"
        host.error = result.get("error") or f"exit {code}"
    return code


def rollout(fleet: Fleet, batch: int, release_command: bool) -> int:
    hosts = fleet.hosts
    if not fleet.several:
        return deploy_one(fleet, hosts[0], False)
    started = time.monotonic()
    failed: list[Host] = []
    try:
        batches = groups(hosts, batch, release_command)
        for number, group in enumerate(batches, 1):
            fleet.each(lambda h: deploy_one(fleet, h, h is not hosts[0]), group)
            failed = [h for h in group if h.result != "deployed"]
            if failed:
                break
            if number < len(batches) and any(h.restarted for h in group):
                # The proxy's passive checks left the restarted hosts out: with the next host
                # down too, no host would be left for it and it would answer 502.
                say(message("restarted_wait", hosts=", ".join(h.name for h in group if h.restarted),
                            seconds=PASSIVE_CHECK_SECONDS))
                time.sleep(PASSIVE_CHECK_SECONDS)
    except KeyboardInterrupt:
        for h in hosts:
            if h.result == "deploying":
                h.result = "interrupted, check it"
        say("\n" + message("interrupted"), err=True)
        say(table(hosts, "old release", "new release"))
        return 130
    say(f"==> rollout summary ({time.monotonic() - started:.1f}s)")
    say(table(hosts, "old release", "new release"))
    if failed:
        for h in failed:
            say(f"error: {h.name}: {h.error}", err=True)
        done = [h.name for h in hosts if h.result == "deployed"]
        kept = [h.name for h in failed] + [h.name for h in hosts if h.result == "not reached"]
        say(message("rollout_stopped", failed=", ".join(h.name for h in failed), done=" ".join(done) or "no host",
                    kept=" ".join(kept)), err=True)
        return 1
    say(f"deployed to all {len(hosts)} hosts")
    return 0


def copy(settings: Settings, names: list[str]) -> int:
    """Pack for each host, upload, verify and install there (not activated)."""
    with Fleet(settings, names) as fleet:
        fleet.reach()
        fleet.packed(with_tests=False)
        failed = []
        for host in fleet.hosts:
            if fleet.several:
                say(f"==> {host.name}")
            try:
                code = local.send_release(settings, host.remote, host.release, "install", leaned=host.lean).status
            except ShipError as refused:
                if str(refused):
                    say(f"error: {refused}", err=True)
                code = refused.status
            if code != 0:
                if not fleet.several:
                    return code
                failed.append(host.name)
        return each_failed("copy", names, failed)


def each_failed(goal: str, names: list[str], failed: list[str]) -> int:
    if failed:
        ok = " ".join(n for n in names if n not in failed) or "no host"
        say("error: " + message("each_failed", goal=goal, failed=" ".join(failed), ok=ok), err=True)
        return 1
    return 0


def rollback(settings: Settings, names: list[str]) -> int:
    """Roll back every host, not stopping at a failure: each one is asked to go back."""
    with Fleet(settings, names) as fleet:
        for host in fleet.hosts:
            if fleet.several:
                say(f"==> {host.name}")
            started = time.monotonic()
            answer = host.remote.run("rollback", report=True)
            host.seconds = time.monotonic() - started
            host.old = answer.result.get("from") or "?"
            host.new = answer.result.get("to") or "?"
            host.result = "rolled back" if answer.status == 0 else "FAILED"
            host.error = answer.result.get("error") or f"exit {answer.status}"
            code = answer.status
        if fleet.several:
            say("==> rollback summary")
            say(table(fleet.hosts, "was", "now"))
            failed = [h for h in fleet.hosts if h.result != "rolled back"]
            for h in failed:
                say(f"error: {h.name}: {h.error}", err=True)
            code = 1 if failed else 0
        local.post_deploy(settings, "rollback", [h.new for h in fleet.hosts], names, code)
        return code
