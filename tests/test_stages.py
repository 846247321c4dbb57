"""Stages: an environment is any config/<name>.ini. A new user's `cp config/prod.ini
config/staging.ini` then `make deploy APP_ENV=staging`, against the private sshd; staging and
prod of one project on one host never disturb each other, and a staging that kept prod's
directory is refused there."""
from __future__ import annotations

import pytest
from harness.app import App, healthz, new_app, stage, tree
from harness.sshd import free_port



class Stage(App):
    """An app of the staging environment: APP_ENV=staging in every make."""

    @property
    def vars(self) -> dict[str, str]:
        return {**super().vars, "APP_ENV": "staging"}


@pytest.fixture()
def staging(baked_project):
    with stage(baked_project):
        yield baked_project


def stage_app(project, sshd_host, tmp_path_factory, request) -> Stage:
    stage = Stage(project, sshd_host, tmp_path_factory.mktemp("host") / "app", free_port())
    request.addfinalizer(stage.stop_everything)
    return stage


def test_an_environment_without_its_file_is_named_with_the_ones_there_are(baked_project, sshd_host,
                                                                           tmp_path_factory, request):
    app = stage_app(baked_project, sshd_host, tmp_path_factory, request)
    result = app.make("deploy", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[0] == (
        "APP_ENV: unknown environment 'staging': there is no config/staging.ini (the environments: dev, prod, test)")
    assert "Traceback" not in result.stderr and "==>" not in result.stdout
    assert not app.dir.exists()


def test_staging_and_prod_on_one_host_keep_apart(staging, sshd_host, tmp_path_factory, request):
    prod = new_app(staging, sshd_host, tmp_path_factory, request)
    stage = stage_app(staging, sshd_host, tmp_path_factory, request)
    checked = stage.make("check-config").stdout.splitlines()
    assert checked[-4:] == ["dev: ok", "prod: ok", "staging: ok", "test: ok"], checked
    prod.deploy()
    deployed = stage.deploy()
    assert f", port {stage.port}, staging, for " in deployed.stdout, deployed.stdout
    assert (stage.dir / "state" / "environment").read_text() == "staging\n"
    assert (prod.dir / "state" / "environment").read_text() == "prod\n"
    assert prod.pid() != stage.pid()
    assert healthz(prod.port)["release"] == prod.current() and healthz(stage.port)["release"] == stage.current()

    # staging's restart and stop are staging's alone; prod's master never changes
    prod_pid, prod_release = prod.pid(), prod.current()
    stage.make("restart")
    stage.make("stop")
    assert healthz(prod.port)["release"] == prod_release and prod.pid() == prod_pid
    assert "not running" in stage.make("status", check=False).stdout
    assert (stage.dir / "shared" / "log").is_dir() and prod.release() == prod_release

    # a staging that kept prod's [deploy] dir: refused there, by the plan and by the deploy
    into_prod = Stage(staging, sshd_host, prod.dir, stage.port)
    before = tree(prod.dir)
    refusal = (f"{prod.dir} is the prod environment's app directory, not staging's: give staging its own "
               "[deploy] dir in config/staging.ini (and its own [server] port)")
    planned = into_prod.make("plan", check=False)
    assert planned.returncode != 0 and refusal in planned.stdout + planned.stderr, planned.stdout + planned.stderr
    refused = into_prod.make("deploy", check=False)
    assert refused.returncode != 0 and refusal in refused.stderr, refused.stderr
    assert into_prod.make("stop", check=False).returncode != 0
    assert healthz(prod.port)["release"] == prod_release and prod.pid() == prod_pid
    changed = {path for path, what in tree(prod.dir).items() if before.get(path) != what}
    # what may differ: the logs, the history's line of the refusal, and .incoming's time (the
    # refused upload came and went)
    assert not {p for p in changed if not p.startswith(("shared/log/", "state/deploys.log")) and p != ".incoming"}, changed
