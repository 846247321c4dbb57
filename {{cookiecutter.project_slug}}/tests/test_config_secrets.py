"""Secrets in the settings: a URL's password never shown, the dev secret key refused on
every deployed host, and the host-local file (the app's own account's to write) unable to
set what runs at deploy time."""
import shutil
{%- if cookiecutter.database != "none" %}
import sys
{%- endif %}
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.config import SHARED_DIR_VAR, ConfigError, hide_password, load_config, runtime_errors

CONFIG = Path(__file__).resolve().parent.parent / "config"


@pytest.fixture()
def config_dir(tmp_path):
    shutil.copytree(CONFIG, tmp_path / "config")
    return tmp_path / "config"


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://app:s3cret@db.example/app", "postgresql://app:***@db.example/app"),
    ("postgresql+psycopg://app:pa/ss@db.example:5433/app?sslmode=require",
     "postgresql+psycopg://app:***@db.example:5433/app?sslmode=require"),
    ("postgresql://app:p@ss@w/rd@db.example/app", "postgresql://app:***@db.example/app"),
    ("postgresql://app:p%40ss@db.example/app", "postgresql://app:***@db.example/app"),
    ("postgresql://app@db.example/app", "postgresql://app@db.example/app"),
    ("sqlite:////srv/app/shared/instance/app.sqlite3", "sqlite:////srv/app/shared/instance/app.sqlite3"),
    ("not a url", "not a url"),
])
{%- if cookiecutter.database != "none" %}
@pytest.mark.parametrize("sqlalchemy", ["installed", "not installed"])
def test_a_urls_password_is_masked_in_full(url, shown, sqlalchemy, monkeypatch):
    if sqlalchemy == "not installed":  # config.py as a script (-S)
        monkeypatch.setitem(sys.modules, "sqlalchemy.engine", None)
{%- else %}
def test_a_urls_password_is_masked_in_full(url, shown):
{%- endif %}
    assert hide_password(url) == shown
    for part in ("s3cret", "pa/ss", "p@ss", "w/rd", "p%40ss"):
        assert part not in hide_password(url)


@pytest.mark.parametrize("env", ["dev", "test"])
def test_the_dev_secret_key_is_refused_in_every_deployed_environment(config_dir, tmp_path, env):
    deployed = {SHARED_DIR_VAR: str(tmp_path)}
    problems = runtime_errors(load_config(env, config_dir=config_dir, environ=deployed))
    assert problems and problems[0].startswith(f"[app] secret_key is missing or a placeholder for {env} on a deployed host")
    assert not [p for p in runtime_errors(load_config(env, config_dir=config_dir, environ={})) if "secret_key" in p]


def test_the_host_local_file_cannot_set_the_release_command(config_dir, tmp_path):
    local = tmp_path / "local.ini"
    local.write_text("[app]\nsecret_key = 3f1c9a0e7b\n[deploy]\nrelease_command = sh -c 'id >/tmp/pwned'\n")
    with pytest.raises(ConfigError) as caught:
        load_config("prod", config_dir=config_dir, local_file=local, environ={})
    assert caught.value.errors == [(f"{local}: [deploy] release_command cannot be set in the host-local file: it runs "
                                    "at every deploy; set it in config/<env>.ini, in git")]
