"""[proxy] in the INI schema: each key checked, every problem named with file, section and key."""
import shutil
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.config import ConfigError, load_config

CONFIG = Path(__file__).resolve().parent.parent / "config"


@pytest.fixture()
def config_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files are named relative to here: config/test.ini
    target = tmp_path / "config"
    shutil.copytree(CONFIG, target)
    return target


def load(config_dir, proxy: str):
    (config_dir / "test.ini").write_text((CONFIG / "test.ini").read_text() + "\n[proxy]\n" + proxy)
    return load_config("test", config_dir=config_dir, environ={})


def errors(config_dir, proxy: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(config_dir, proxy)
    return caught.value.errors


def test_no_domain_is_no_proxy_as_before(config_dir):
    proxy = load_config("prod", config_dir=config_dir, environ={})["proxy"]
    assert proxy["domain"] == "" and proxy["tls"] == "acme" and proxy["static_max_age"] == 3600
    assert proxy["acme_directory"].startswith("https://")


def test_a_domain_with_acme_and_a_private_ca(config_dir):
    proxy = load(config_dir, "domain = App.Example.COM.\nacme_email = ops@example.com\n"
                 "acme_directory = https://ca.internal:14000/dir\nacme_ca_bundle = /srv/app/shared/ca.pem\n")["proxy"]
    assert proxy["domain"] == "app.example.com"
    assert proxy["acme_directory"] == "https://ca.internal:14000/dir"
    assert proxy["acme_ca_bundle"] == "/srv/app/shared/ca.pem"


def test_every_bad_proxy_value_is_named_at_once(config_dir):
    found = errors(config_dir, "domain = not a domain\ntls = maybe\nacme_email = nobody\n"
                   "acme_directory = http://insecure/dir\nacme_ca_bundle = relative/ca.pem\n"
                   "certificate = /etc/$(id)\nstatic_max_age = -1\n")
    assert found == [
        "config/test.ini: [proxy] domain: 'not a domain' is not a domain name (e.g. app.example.com; empty: no proxy)",
        ("config/test.ini: [proxy] tls: 'maybe' is not one of acme, own, off (acme: a certificate from acme_directory; "
         "own: certificate and private_key; off: plain http)"),
        "config/test.ini: [proxy] acme_email: 'nobody' is not an e-mail address (empty: none is given to the ACME server)",
        ("config/test.ini: [proxy] acme_directory: 'http://insecure/dir' is not an https:// URL "
         "(an ACME directory, e.g. Let's Encrypt's)"),
        ("config/test.ini: [proxy] acme_ca_bundle: 'relative/ca.pem' is not an absolute path on the host "
         "(letters, digits and ._/+- only)"),
        ("config/test.ini: [proxy] certificate: '/etc/$(id)' is not an absolute path on the host "
         "(letters, digits and ._/+- only)"),
        "config/test.ini: [proxy] static_max_age: -1 is out of range (must be at least 0)",
    ]


@pytest.mark.parametrize("domain", ["localhost", "-app.example.com", "app_1.example.com", "a" * 64 + ".com",
                                    "app.example.123", "app..example.com"])
def test_names_that_are_not_domains(config_dir, domain):
    assert errors(config_dir, f"domain = {domain}\n")[0].startswith("config/test.ini: [proxy] domain: ")


def test_own_tls_needs_its_files(config_dir):
    assert errors(config_dir, "domain = app.example.com\ntls = own\ncertificate = /srv/app/shared/tls/chain.pem\n") == [
        "config/test.ini: [proxy] private_key is empty: tls = own needs the host's private key file"]
    proxy = load(config_dir, "domain = app.example.com\ntls = OWN\ncertificate = /srv/a/c.pem\nprivate_key = /srv/a/k.pem\n")
    assert proxy["proxy"]["tls"] == "own"


def test_the_proxy_host_and_the_maintenance_retry_after(config_dir):
    proxy = load_config("prod", config_dir=config_dir, environ={})["proxy"]
    assert proxy["host"] == "" and proxy["maintenance_retry_after"] == 300
    proxy = load(config_dir, "domain = app.example.com\nhost = web2\nmaintenance_retry_after = 60\n")["proxy"]
    assert proxy["host"] == "web2" and proxy["maintenance_retry_after"] == 60
    assert errors(config_dir, "host = web1 web2\nmaintenance_retry_after = 1h\n") == [
        ("config/test.ini: [proxy] host: 'web1 web2' is not one host (a name or address as REMOTE_HOSTS gives it; "
         "empty: the first)"),
        "config/test.ini: [proxy] maintenance_retry_after: '1h' is not an integer"]
    assert errors(config_dir, "maintenance_retry_after = 999999\n") == [
        "config/test.ini: [proxy] maintenance_retry_after: 999999 is out of range (must be between 0 and 604800)"]
