"""deploy/variables.py: the make variables that reach ssh, scp and the host, checked by type."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "deploy"))
import variables

GOOD = {"APP_ENV": "prod", "REMOTE_HOST": "web1.example.org", "REMOTE_USER": "deploy", "REMOTE_DIR": "apps/x",
        "SSH_PORT": "", "PORT": "8000", "KEEP_RELEASES": "5", "LOG_MAX_KB": "51200", "LOG_KEEP": "5",
        "HOST_PYTHON": "", "LINES": "100", "CONFIRM": "", "MEMORY_MAX_KB": "1048576", "TASKS_MAX": "512"}


def test_good_values_pass():
    assert variables.problems(GOOD) == []
    assert variables.problems({**GOOD, "REMOTE_HOST": "10.0.0.7", "HOST_PYTHON": "/usr/bin/python3.12"}) == []
    assert variables.problems({**GOOD, "REMOTE_HOST": "fe80::1", "CONFIRM": "1", "SSH_PORT": "2222"}) == []


@pytest.mark.parametrize("name, value, said", [
    ("REMOTE_HOST", "x;touch /tmp/p;:", "REMOTE_HOST must be a host name, an address or a Host alias"),
    ("REMOTE_HOST", "-oProxyCommand=touch /tmp/p", "REMOTE_HOST must be a host name"),
    ("REMOTE_HOST", "", ("REMOTE_HOST is not set: give it (make deploy REMOTE_HOST=host) or set host in [deploy] of "
                         "config/prod.ini")),
    ("REMOTE_USER", "-l root", "REMOTE_USER must be a user name"),
    ("REMOTE_USER", "ann$(id)", "REMOTE_USER must be a user name"),
    ("LINES", "5; rm -rf ~", "LINES must be a number, got '5; rm -rf ~'"),
    ("MEMORY_MAX_KB", "1G", "MEMORY_MAX_KB must be a number, got '1G'"),
    ("TASKS_MAX", "512 --x", "TASKS_MAX must be a number"),
    ("CONFIRM", "1 && reboot", "CONFIRM must be 1 or nothing"),
    ("PORT", "70000", "PORT must be between 1 and 65535, got 70000"),
    ("PORT", "", "PORT must be a number, got ''"),
    ("REMOTE_DIR", "apps/x y", "REMOTE_DIR must be a path of letters, digits and ._/-, got 'apps/x y'"),
    ("APP_ENV", "prod;id", "APP_ENV must be an environment name"),
    ("HOST_PYTHON", "python3 -c 'x'", "HOST_PYTHON must be a command or path"),
])
def test_each_bad_value_is_named_with_its_variable(name, value, said):
    found = variables.problems({**GOOD, name: value})
    assert len(found) == 1 and found[0].startswith(said), found


def test_every_problem_at_once():
    said = variables.problems({"REMOTE_HOST": "", "PORT": "x", "APP_ENV": "prod"}, "status")
    assert said == [("REMOTE_HOST is not set: give it (make status REMOTE_HOST=host) or set host in [deploy] of "
                     "config/prod.ini"), "PORT must be a number, got 'x'"]


@pytest.mark.parametrize("name", ["KEEP_RELEASES", "LOG_KEEP"])
def test_zero_kept_releases_or_logs_is_refused_as_in_the_ini(name):
    assert variables.problems({name: "0"}) == [f"{name} must be at least 1 (as in the INI files), got 0"]
    assert variables.problems({name: "1"}) == []


def test_force_is_1_or_nothing():
    assert variables.problems({"FORCE": "1"}) == variables.problems({"FORCE": ""}) == []
    assert variables.problems({"FORCE": "yes"}) == ["FORCE must be 1 or nothing, got 'yes'"]
