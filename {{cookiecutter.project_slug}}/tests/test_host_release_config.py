"""How the host program reads a release's settings (deploy/host/release_config.py): one start
of the release's own config.py per command, again when shared/local.ini changes, and an
older release's answers through its `get`. A real config.py runs in a release laid out as on
a host; its python counts its starts."""
import os
import shutil
import sys
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.config import host_facts, load_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))
from host import VARS, context, processes, proxy, release_config, serve, systemd
from host.workers import Spec

PACKAGE = "{{ cookiecutter.package_name }}"


@pytest.fixture()
def host(tmp_path, monkeypatch):
    host = context.Host(context.Settings(app_dir=tmp_path / "app", env="prod"), "deploy")
    host.service = systemd.Service("daemon", "my-app-prod-1a2b3c4d", "me")
    host.shared.mkdir(parents=True)
    for key, value in {"ENV": "prod", "SHARED_DIR": host.shared, "LOCAL_CONFIG": host.shared / "local.ini"}.items():
        monkeypatch.setenv(f"{VARS}_{key}", str(value))
    return host


def release(host, name="1.0-20261201T000000Z", older=False):
    """A release as the host has it: its config/, and a venv whose python logs each start."""
    directory = host.releases / name
    shutil.copytree(ROOT / "config", directory / "config")
    site = directory / "venv" / "lib" / "python3" / "site-packages" / PACKAGE
    site.mkdir(parents=True)
    source = (ROOT / "src" / PACKAGE / "config.py").read_text()
    if older:  # as packed before `config.py host`: it knew only get and workers
        for new, old in (('sys.argv[1] == "host"', 'sys.argv[1] == "workers"'), ("host_facts(load", "workers(load")):
            assert source.count(new) == 1, new
            source = source.replace(new, old)
    (site / "config.py").write_text(source)
    python = directory / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho start >> "{directory}/starts"\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return name


def starts(host, name):
    path = host.releases / name / "starts"
    return len(path.read_text().splitlines()) if path.exists() else 0


def baked(host, name):
    """What the release's config says, read here in-process, as its own config.py reads it there."""
    return host_facts(load_config("prod", config_dir=host.releases / name / "config", environ=dict(os.environ)))


def test_one_start_answers_the_edge_the_deploy_and_the_workers(host):
    name = release(host)
    facts = baked(host, name)
    assert proxy.release_proxy(host, name) == facts["proxy"]
    assert serve.release_settings(host, name) == (facts["release_command"], facts["smoke_paths"])
    assert processes.read_spec(host, name) == Spec.from_json(facts["workers"])
    assert starts(host, name) == 1


def test_a_change_to_local_ini_is_read_again(host):
    name = release(host)
    serve.release_settings(host, name)
    (host.shared / "local.ini").write_text("[deploy]\nsmoke_paths = /healthz /about\n")
    assert serve.release_settings(host, name)[1] == ["/healthz", "/about"]
    assert starts(host, name) == 2


def test_an_invalid_config_leaves_the_site_alone_and_refuses_the_release(host):
    name = release(host)
    (host.shared / "local.ini").write_text("[server]\nworkers = many\n")
    assert proxy.release_proxy(host, name) == {}  # the smoke boot says why, in the app's words
    with pytest.raises(context.Failure, match=r"cannot read \[deploy\] release_command .*workers"):
        serve.release_settings(host, name)
    assert (host.releases / name / ".refused").exists()


def test_a_release_packed_before_host_answers_through_get_and_workers(host):
    name = release(host, older=True)
    ini = host.releases / name / "config" / "prod.ini"
    ini.write_text(ini.read_text() + "\n[process:mailer]\ncommand = mailer\n")
    facts = baked(host, name)
    assert proxy.release_proxy(host, name) == {key: facts["proxy"][key] for key in release_config.PROXY_KEYS}
    assert serve.release_settings(host, name) == (facts["release_command"], facts["smoke_paths"])
    assert "mailer" in [w.name for w in processes.read_spec(host, name).workers]
    assert starts(host, name) == 4  # `host` refused, then [proxy], [deploy] and workers, one start each


def test_a_release_without_config_py_is_named(host):
    name = release(host)
    shutil.rmtree(host.releases / name / "venv" / "lib")
    with pytest.raises(context.Failure, match=f"release {name} has no {PACKAGE}/config.py"):
        processes.read_spec(host, name)
