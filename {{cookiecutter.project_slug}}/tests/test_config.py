"""The INI schema: every kind of error is reported, all at once, naming file, section and key."""
import shutil
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.cli import main
from {{ cookiecutter.package_name }}.config import ENV_PREFIX, ConfigError, environments, instance_dir, load_config

CONFIG = Path(__file__).resolve().parent.parent / "config"


@pytest.fixture()
def config_dir(tmp_path):
    target = tmp_path / "config"
    shutil.copytree(CONFIG, target)
    return target


def errors_for(config_dir, env="test", environ=None, **files):
    for name, text in files.items():
        (config_dir / f"{name}.ini").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(env, config_dir=config_dir, environ=environ or {})
    return caught.value.errors


@pytest.mark.parametrize("env", environments(CONFIG))
def test_shipped_configs_are_valid(env):
    config = load_config(env, config_dir=CONFIG, environ={})
    assert 1 <= config["server"]["port"] <= 65535


def test_an_environment_is_any_config_file_but_base_and_local(config_dir):
    (config_dir / "staging.ini").write_text((config_dir / "prod.ini").read_text())
    for name in ("local", "Upper", "under_score", "9lives"):
        (config_dir / f"{name}.ini").write_text("")
    (config_dir / "notes.txt").write_text("")
    assert environments(config_dir) == ("dev", "prod", "staging", "test")
    assert load_config("staging", config_dir=config_dir, environ={})["server"]["port"] > 0
    assert main(["check-config", "--config-dir", str(config_dir)]) == 0


@pytest.mark.parametrize(("env", "expected"), [
    ("nowhere", "unknown environment 'nowhere': there is no {where}/nowhere.ini (the environments: {known})"),
    ("base", ("'base' is not an environment name (lowercase letters, digits and -, not base or local) "
              "(the environments: {known})")),
    ("Prod", "'Prod' is not an environment name"),
])
def test_an_unknown_environment_is_named_with_the_ones_there_are(config_dir, env, expected):
    known = ", ".join(environments(config_dir))
    assert errors_for(config_dir, env=env)[0].startswith(expected.format(where=config_dir, known=known))


def test_the_deploy_workflow_offers_every_environment_that_deploys():
    """dev and test are this machine's; every other config/<env>.ini is a stage the workflow's
    input must offer (add it under `options:` in .github/workflows/deploy.yml)."""
    workflow = (CONFIG.parent / ".github" / "workflows" / "deploy.yml").read_text()
    block = workflow.split("options:", 1)[1].split("default:", 1)[0]
    offered = {line.strip()[2:] for line in block.splitlines() if line.strip().startswith("- ")}
    stages = set(environments(CONFIG)) - {"dev", "test"}
    assert offered == stages, (f"deploy.yml offers {sorted(offered)}, config/ has {sorted(stages)}: "
                               "list each config/<env>.ini but dev and test under the app_env input's options")


def test_env_file_overrides_base_and_environment_overrides_both(config_dir):
    config = load_config("dev", config_dir=config_dir, environ={f"{ENV_PREFIX}SERVER_WORKERS": "7"})
    assert config["app"]["debug"] is True
    assert config["server"]["workers"] == 7


def test_local_file_is_read_last(config_dir, tmp_path):
    local = tmp_path / "local.ini"
    local.write_text("[app]\nsecret_key = from-the-host\n")
    config = load_config("prod", config_dir=config_dir, local_file=local, environ={})
    assert config["app"]["secret_key"] == "from-the-host"


def test_here_is_the_directory_of_the_file(config_dir):
    (config_dir / "test.ini").write_text("[app]\nsecret_key = %(here)s/key\n")
    assert load_config("test", config_dir=config_dir, environ={})["app"]["secret_key"] == f"{config_dir}/key"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[server]\nport = abc\n", "[server] port: 'abc' is not an integer"),
        ("[server]\nport = 70000\n", "[server] port: 70000 is out of range (must be between 1 and 65535)"),
        ("[server]\nworkers = 0\n", "[server] workers: 0 is out of range (must be at least 1)"),
        ("[app]\ndebug = maybe\n", "[app] debug: 'maybe' is not a boolean"),
        ("[app]\nlog_level = LOUD\n", "[app] log_level: 'LOUD' is not one of DEBUG"),
        ("[serverr]\nport = 1\n", "unknown section [serverr]"),
        ("[server]\nprot = 1\n", "[server] unknown key 'prot'"),
        ("port = 1\n", "not a valid INI file"),
        ("[server]\nport = 1\nport = 2\n", "not a valid INI file"),
        ("[app]\nsecret_key = %(nope)s\n", "[app] secret_key:"),
        ("[deploy]\nsmoke_paths = / about\n", "[deploy] smoke_paths: 'about' is not a URL path"),
        ("[deploy]\nsmoke_paths = /a\"b\n", "[deploy] smoke_paths: '/a\"b' is not a URL path"),
        ("[deploy]\nrelease_command = flask seed\n  rm -rf /\n", "[deploy] release_command: spans several lines"),
    ],
)
def test_each_error_names_file_section_and_key(config_dir, text, expected):
    errors = errors_for(config_dir, test=text)
    assert any(expected in e and "test.ini" in e for e in errors), errors


def test_smoke_paths_default_to_the_home_page_and_are_kept_spaced(config_dir):
    assert load_config("test", config_dir=config_dir, environ={})["deploy"]["smoke_paths"] == "/"
    (config_dir / "test.ini").write_text("[deploy]\nsmoke_paths =  /  /about?x=1\n  /static/style.css\n")
    paths = load_config("test", config_dir=config_dir, environ={})["deploy"]["smoke_paths"]
    assert paths == "/ /about?x=1 /static/style.css"


def test_instance_folder_is_shared_instance_on_a_host_and_instance_in_a_checkout(tmp_path):
    environ = {f"{ENV_PREFIX}SHARED_DIR": "/srv/app/shared"}
    assert instance_dir(environ) == Path("/srv/app/shared/instance")
    assert instance_dir({f"{ENV_PREFIX}CONFIG_DIR": str(tmp_path / "config")}) == tmp_path / "instance"


def test_every_problem_is_reported_at_once(config_dir):
    errors = errors_for(config_dir, test="[server]\nport = abc\nworkers = -1\n[app]\ndebug = maybe\n")
    assert len(errors) == 3


def test_missing_key_names_the_files_looked_in(config_dir):
    (config_dir / "base.ini").write_text((CONFIG / "base.ini").read_text().replace("timeout = 30\n", ""))
    errors = errors_for(config_dir)
    assert any("[server] timeout is missing" in e and "base.ini" in e for e in errors), errors


def test_bad_environment_variable_is_named(config_dir):
    errors = errors_for(config_dir, environ={f"{ENV_PREFIX}SERVER_PORT": "x"})
    assert any(f"environment variable {ENV_PREFIX}SERVER_PORT" in e for e in errors), errors


def test_prod_refuses_debug(config_dir):
    errors = errors_for(config_dir, env="prod", prod="[app]\ndebug = true\n")
    assert any("debug is on for prod" in e for e in errors), errors


@pytest.mark.parametrize("secret", [None, "", "change-me"])
def test_prod_app_refuses_missing_or_placeholder_secret(config_dir, monkeypatch, tmp_path, secret):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(f"{ENV_PREFIX}LOCAL_CONFIG", raising=False)
    if secret is not None:
        (config_dir / "local.ini").write_text(f"[app]\nsecret_key = {secret}\n")
        monkeypatch.setenv(f"{ENV_PREFIX}LOCAL_CONFIG", str(config_dir / "local.ini"))
    with pytest.raises(ConfigError, match="secret_key is missing or a placeholder"):
        create_app("prod")


def test_prod_app_starts_with_a_real_secret(config_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
{%- if cookiecutter.database == "postgresql" %}
    database = "[database]\nurl = postgresql://app:pw@db.example/app\n"  # nothing connects yet
{%- else %}
    database = ""
{%- endif %}
    (config_dir / "local.ini").write_text("[app]\nsecret_key = 3f1c9a0e7b\n" + database)
    monkeypatch.setenv(f"{ENV_PREFIX}LOCAL_CONFIG", str(config_dir / "local.ini"))
    assert create_app("prod").config["SECRET_KEY"] == "3f1c9a0e7b"


def test_check_config_command_reports_and_fails(config_dir, capsys):
    (config_dir / "prod.ini").write_text("[server]\nport = abc\n")
    assert main(["check-config", "--config-dir", str(config_dir)]) == 1
    captured = capsys.readouterr()
    assert "dev: ok" in captured.out and "test: ok" in captured.out
    assert "prod.ini: [server] port: 'abc' is not an integer" in captured.err
    assert "Traceback" not in captured.err


def test_check_config_does_not_demand_prods_secret(config_dir):
    assert main(["check-config", "--env", "prod", "--config-dir", str(config_dir)]) == 0
{%- if cookiecutter.database != "none" %}


def test_shared_is_the_hosts_shared_directory(config_dir, tmp_path):
    (config_dir / "test.ini").write_text("[database]\nurl = sqlite:///%(shared)s/data/x.sqlite3\n")
    environ = {f"{ENV_PREFIX}SHARED_DIR": "/srv/app/shared"}
    assert load_config("test", config_dir=config_dir, environ=environ)["database"]["url"] == (
        "sqlite:////srv/app/shared/data/x.sqlite3")
    here = load_config("test", config_dir=config_dir, environ={})["database"]["url"]
    assert here == f"sqlite:///{tmp_path}/instance/data/x.sqlite3"  # no host: beside config/
    assert not (tmp_path / "instance").exists()  # reading the config makes nothing


def test_dev_database_is_a_file_in_instance():
    url = load_config("dev", config_dir=CONFIG, environ={})["database"]["url"]
    assert url == f"sqlite:///{CONFIG.parent / 'instance' / 'dev.sqlite3'}"
{%- if cookiecutter.database == "sqlite" %}


def test_prod_database_is_a_file_in_shared_data(tmp_path):
    environ = {f"{ENV_PREFIX}SHARED_DIR": str(tmp_path / "shared")}
    url = load_config("prod", config_dir=CONFIG, environ=environ)["database"]["url"]
    assert url == f"sqlite:///{tmp_path}/shared/data/{{ cookiecutter.package_name }}.sqlite3"
{%- else %}


def test_prod_database_url_is_set_only_on_the_host(config_dir, monkeypatch, tmp_path):
    assert load_config("prod", config_dir=CONFIG, environ={})["database"]["url"] == ""
    assert main(["check-config", "--env", "prod", "--config-dir", str(config_dir)]) == 0
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(f"{ENV_PREFIX}LOCAL_CONFIG", raising=False)
    monkeypatch.delenv(f"{ENV_PREFIX}DATABASE_URL", raising=False)
    (config_dir / "local.ini").write_text("[app]\nsecret_key = 3f1c9a0e7b\n")
    monkeypatch.setenv(f"{ENV_PREFIX}LOCAL_CONFIG", str(config_dir / "local.ini"))
    with pytest.raises(ConfigError, match="set it on the host: make config-set SETTING=database.url"):
        create_app("prod")
{%- endif %}


@pytest.mark.parametrize(
    "url, expected",
    [
        ("sqlite://", "sqlite://"),
        ("sqlite:////srv/app/shared/data/../data/app.sqlite3", "sqlite:////srv/app/shared/data/app.sqlite3"),
{%- if cookiecutter.database == "postgresql" %}
        ("postgresql://app:s3cret@db.example:5432/app", "postgresql+psycopg://app:s3cret@db.example:5432/app"),
        ("postgresql+psycopg://app@/app?host=/run/postgresql", "postgresql+psycopg://app@/app?host=/run/postgresql"),
{%- endif %}
    ],
)
def test_database_urls_accepted(config_dir, url, expected):
    (config_dir / "test.ini").write_text(f"[database]\nurl = {url}\n")
    assert load_config("test", config_dir=config_dir, environ={})["database"]["url"] == expected


@pytest.mark.parametrize(
    "url, expected",
    [
        ("mysql://app:s3cret@db/app", "unknown scheme 'mysql'"),
        ("postgres://app:s3cret@db/app", "unknown scheme 'postgres'"),
{%- if cookiecutter.database == "sqlite" %}
        ("postgresql://app:s3cret@db/app", "unknown scheme 'postgresql'"),  # no driver in this project
{%- else %}
        ("postgresql://app:s3cret@db.example", "names no database"),
{%- endif %}
        ("sqlite:///data/app.sqlite3", "the SQLite path 'data/app.sqlite3' is relative"),
        ("sqlite://host/app.sqlite3", "a SQLite URL has no host"),
        ("/srv/app.sqlite3", "is not a database URL"),
    ],
)
def test_database_urls_refused_without_showing_the_password(config_dir, url, expected):
    errors = errors_for(config_dir, test=f"[database]\nurl = {url}\n")
    assert any(expected in e and "test.ini: [database] url:" in e for e in errors), errors
    assert not any("s3cret" in e for e in errors)
{%- endif %}
