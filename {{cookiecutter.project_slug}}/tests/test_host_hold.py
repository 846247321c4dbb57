"""The deliberate hold (deploy/host/hold.py): real files in a real state/ folder."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "deploy"))
from host import commands, context, hold  # noqa: F401 (commands registers the host commands)


@pytest.fixture()
def host(tmp_path):
    (tmp_path / "state").mkdir(mode=0o700)
    return context.Host(context.Settings(app_dir=tmp_path, who="ann@laptop"), "lock")


def test_a_hold_refuses_the_deploy_lock_naming_who_when_and_why(host):
    assert hold.refusal(host) is None
    assert hold.take_hold(hold.hold_file(host), "ann@laptop", "incident 42", "2026-12-01T10:00:00Z")
    assert not hold.take_hold(hold.hold_file(host), "bob@ci", "another", "now")  # one hold at a time
    assert os.stat(hold.hold_file(host)).st_mode & 0o777 == 0o600
    with pytest.raises(context.Failure) as refused:
        host.take_lock("deploy")
    assert str(refused.value) == ("deploys to this host are held by ann@laptop since 2026-12-01T10:00:00Z: "
                                  "incident 42; make unlock lifts the hold")
    assert not host.lock.exists()  # the deploy lock was not taken either
    assert hold.lift(host) and hold.refusal(host) is None and not hold.lift(host)
    host.take_lock("deploy")
    assert host.lock.is_dir()
    host.unlock_if_held()


@pytest.mark.parametrize("message", ["", "   ", "two\nlines", "x" * 301, "tab\there"])
def test_a_hold_needs_one_line_saying_why(message):
    with pytest.raises(context.Failure):
        hold.check_message(message)


def test_a_hold_planted_as_a_link_is_not_followed(host, tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text('{"who": "x", "when": "y", "message": "z"}')
    hold.hold_file(host).symlink_to(target)
    with pytest.raises(context.Failure, match="cannot read the hold"):
        hold.refusal(host)
    assert not hold.take_hold(hold.hold_file(host), "ann", "m", "now")  # O_EXCL: the link stays as it is
    assert target.read_text().startswith('{"who": "x"')


def test_an_app_directory_is_one_environments_and_another_is_refused_there(tmp_path):
    (tmp_path / "state").mkdir(mode=0o700)
    prod = context.Host(context.Settings(app_dir=tmp_path, env="prod"), "deploy")
    prod.take_lock("deploy")  # the first command that changes anything claims it
    prod.unlock_if_held()
    assert (tmp_path / "state" / "environment").read_text() == "prod\n"
    staging = context.Host(context.Settings(app_dir=tmp_path, env="staging"), "deploy")
    with pytest.raises(context.Failure) as refused:
        staging.take_lock("deploy")
    assert str(refused.value) == (f"{tmp_path} is the prod environment's app directory, not staging's: give staging "
                                  "its own [deploy] dir in config/staging.ini (and its own [server] port)")
    assert not staging.lock.exists()
    prod.take_lock("deploy")
    prod.unlock_if_held()


def test_a_hold_refuses_make_run_job_before_it_looks_for_the_job(host):
    from host.cli import COMMANDS
    assert hold.take_hold(hold.hold_file(host), "ann@laptop", "incident 42", "2026-12-01T10:00:00Z")
    with pytest.raises(context.Failure, match="deploys to this host are held by ann@laptop"):
        COMMANDS["run_job"].run(host, None)
    assert "run-job" in COMMANDS["lock"].help
