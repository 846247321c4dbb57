"""Every sentence the deploy program says to its user, in one table."""
from __future__ import annotations

MESSAGES = {
    "unreachable": "cannot reach {target} over ssh (see above); nothing was changed",
    "upload_failed": "the upload to {target} failed (above); nothing was changed there (make check-host shows its disk)",
    "no_release_file": "RELEASE={release} is not a file: run make pack first",
    "hook_failed": "warning: deploy/hooks/post-deploy failed (exit {status}); the {what} itself is unchanged",
    "no_cmd": "CMD is not set: make exec CMD=\"flask routes\"",
    "bad_setting": "SETTING must be section.key (e.g. {example}), got '{setting}'{more}",
    "no_value": "no value on stdin for {setting}",
    "bad_backup": "BACKUP must name a file in the host's shared/backups/ (make db-backup prints one), got '{backup}'",
    "restore_confirm": "db-restore replaces the host's database with {backup} and stops the app meanwhile: run it "
                       "with CONFIRM=1",
    "one_host_only": "make {goal} works on one host at a time: give REMOTE_HOST=host (REMOTE_HOSTS is {hosts})",
    "sqlite_hosts": "the {env} database is SQLite, a file on each host: deployed to several hosts, each would keep "
                    "a database of its own and answer with different data. Use PostgreSQL for several hosts "
                    "(make config-set SETTING=database.url on each), or deploy to one (REMOTE_HOST=…); nothing was "
                    "changed",
    "no_hosts": "REMOTE_HOSTS is empty: give REMOTE_HOSTS=\"host1 host2\" or REMOTE_HOST=host",
    "bad_batch": "BATCH must be a whole number of hosts (1 or more), got '{batch}'",
    "bad_nginx_port": "NGINX_PORT must be a port or address:port, got '{port}'",
    "local_failed": "make {step} failed; no host was touched",
    "not_every_host": "not every host can be reached; nothing was changed",
    "cannot_ask": "cannot ask {host} for its current release: {why}",
    "rollout_stopped": "rollout stopped at {failed}: new release on {done}; old release kept on {kept}",
    "restarted_wait": "  {hosts} restarted (not handed over): waiting {seconds}s, until the proxy sends it requests "
                      "again, before the next host",
    "interrupted": "interrupted: every host started finishes or undoes its deploy by itself",
    "each_failed": "make {goal} failed on {failed} (ok on {ok})",
    "no_address": "cannot tell the address of {host} (ssh -G): {why}",
    "no_home": "REMOTE_DIR {dir} is relative and {host} did not say where its home is ({why}); give "
               "STATIC_ROOT=/absolute/path/",
}


class ShipError(Exception):
    """A refusal in one sentence (or several lines, one problem each) and the exit status."""

    def __init__(self, text: str, status: int = 2, plain: bool = False):
        super().__init__(text)
        self.status, self.plain = status, plain  # plain: printed as it is, without "error: "


def message(key: str, **words: object) -> str:
    return MESSAGES[key].format(**words)
