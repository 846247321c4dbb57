"""Workers and jobs: their sections in the INI files ([process:NAME], [schedule:NAME]), their
unit names and the text of their units (deploy/host/workers.py), and the host's picks of
what to stop, by import (milliseconds)."""
import shutil
import sys
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.config import ConfigError, load_config, workers

DEPLOY = Path(__file__).parents[1] / "deploy"
sys.path.insert(0, str(DEPLOY))
from host import context, systemd
from host import workers as w

CONFIG = Path(__file__).resolve().parent.parent / "config"
UNIT = "my-app-prod-1a2b3c4d"


@pytest.fixture()
def config_dir(tmp_path):
    target = tmp_path / "config"
    shutil.copytree(CONFIG, target)
    return target


def with_sections(config_dir, text, env="test"):
    path = config_dir / f"{env}.ini"
    path.write_text(path.read_text() + "\n" + text)
    return load_config(env, config_dir=config_dir, environ={})


def errors(config_dir, text):
    with pytest.raises(ConfigError) as caught:
        with_sections(config_dir, text)
    return caught.value.errors


# --- the INI sections ----------------------------------------------------------------------------


{%- if cookiecutter.database == "none" %}
def test_the_baked_config_has_no_worker_and_no_job(config_dir):
    config = load_config("test", config_dir=config_dir, environ={})  # (prod.ini is the user's to add to)
    assert (config.processes, config.schedules) == ({}, {})
    assert workers(config) == {"stop_timeout": 10, "processes": {}, "schedules": {}}
{%- else %}
def test_the_baked_config_has_no_worker_and_one_job_the_nightly_backup(config_dir):
    config = load_config("prod", config_dir=config_dir, environ={})
    assert config.processes == {}
    assert config.schedules == {"backup": {"when": "*-*-* 03:00:00", "command": "{{ cookiecutter.package_name }} db-nightly-backup",
                                           "timeout": 3600, "without_systemd": "skip"}}
    assert config["deploy"]["keep_backups"] == 7 and workers(config)["schedules"] == config.schedules


def test_keep_backups_counts_only_the_nightly_backups(tmp_path):
    from {{ cookiecutter.package_name }}.backup import prune_nightly
    for name in ("1.0-20261101T000000Z.backup", "nightly-20261101T030000Z.backup", "nightly-20261102T030000Z.backup",
                 "nightly-20261103T030000Z.backup", "before-restore.backup"):
        (tmp_path / name).write_text("x")
    gone = prune_nightly(tmp_path, 2)
    assert [p.name for p in gone] == ["nightly-20261101T030000Z.backup"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "1.0-20261101T000000Z.backup", "before-restore.backup", "nightly-20261102T030000Z.backup",
        "nightly-20261103T030000Z.backup"]
{%- endif %}


def test_process_and_schedule_sections_are_read_with_their_defaults(config_dir):
    config = with_sections(config_dir, "[process:mail]\ncommand = flask send-mail --loop\n\n"
                                       "[process:thumbs]\ncommand = thumbs\ncount = 3\n\n"
                                       "[schedule:cleanup]\nwhen = *-*-* 04:00:00\ncommand = flask cleanup\n\n"
                                       "[schedule:report]\nwhen = daily\ncommand = report\ntimeout = 15m\n"
                                       "without_systemd = skip\n")
    assert config.processes == {"mail": {"command": "flask send-mail --loop", "count": 1},
                                "thumbs": {"command": "thumbs", "count": 3}}
    config.schedules.pop("backup", None)  # the bake's own, with a database
    assert config.schedules == {"cleanup": {"when": "*-*-* 04:00:00", "command": "flask cleanup", "timeout": 3600,
                                            "without_systemd": "refuse"},
                                "report": {"when": "daily", "command": "report", "timeout": 900, "without_systemd": "skip"}}


def test_an_env_file_changes_one_key_of_a_base_section(config_dir):
    (config_dir / "base.ini").write_text((config_dir / "base.ini").read_text() + "\n[process:mail]\ncommand = a\n")
    assert with_sections(config_dir, "[process:mail]\ncount = 2\n").processes == {"mail": {"command": "a", "count": 2}}


@pytest.mark.parametrize(("text", "expected"), [
    ("[process:Mail]\ncommand = x\n", "config/test.ini: [process:Mail]: the name 'Mail' must be lower-case letters"),
    ("[process:9x]\ncommand = x\n", "config/test.ini: [process:9x]: the name '9x' must be lower-case letters"),
    ("[process:]\ncommand = x\n", "the name '' must be"),
    ("[process:mail]\ncount = 2\n", "[process:mail] command is missing (looked in"),
    ("[process:mail]\ncommand = x\ncount = 0\n", "config/test.ini: [process:mail] count: 0 is out of range"),
    ("[process:mail]\ncommand = x\nnumprocs = 2\n", "config/test.ini: [process:mail] unknown key 'numprocs' (known: command, count)"),
    ("[process:mail]\ncommand =\n", "config/test.ini: [process:mail] command: is empty"),
    ("[schedule:nightly]\ncommand = x\n", "[schedule:nightly] when is missing"),
    ("[schedule:nightly]\nwhen = 100%% sure\ncommand = x\n", "[schedule:nightly] when: '100% sure' is not a calendar"),
    ("[schedule:nightly]\nwhen = daily\ncommand = x\ntimeout = soon\n", "[schedule:nightly] timeout: 'soon' is not a duration"),
    ("[schedule:nightly]\nwhen = daily\ncommand = x\nwithout_systemd = cron\n",
     "[schedule:nightly] without_systemd: 'cron' is not one of refuse, skip"),
    ("[worker:mail]\ncommand = x\n", "unknown section [worker:mail] (known: app, server, deploy"),
])
def test_each_error_names_file_section_and_key(config_dir, text, expected):
    found = errors(config_dir, text)
    assert any(expected in line for line in found), found


def test_a_worker_cannot_come_from_the_host_local_file(config_dir, tmp_path):
    local = tmp_path / "local.ini"
    local.write_text("[process:sneaky]\ncommand = curl evil\n")
    with pytest.raises(ConfigError) as caught:
        load_config("test", config_dir=config_dir, local_file=local, environ={})
    assert any("[process:sneaky] cannot be set in the host-local file" in e for e in caught.value.errors)


# --- names ----------------------------------------------------------------------------------------------


def spec(**more):
    return w.Spec(10, (w.Worker("mail", "send --loop", 2), w.Worker("beat", "beat")),
                  (w.Job("cleanup", "*:0/10", "flask cleanup", 60),), **more)


def test_worker_instances_and_job_units_are_named_after_the_web_unit():
    assert w.instances(UNIT, spec()) == [f"{UNIT}-mail@1.service", f"{UNIT}-mail@2.service", f"{UNIT}-beat@1.service"]
    assert w.template(UNIT, "mail") == f"{UNIT}-mail@.service"
    assert w.job_units(UNIT, "cleanup") == (f"{UNIT}-job-cleanup.service", f"{UNIT}-job-cleanup.timer")
    assert w.instance_of(UNIT, f"{UNIT}-mail@12.service") == ("mail", 12)
    for other in (f"{UNIT}.service", f"{UNIT}-logs.service", f"{UNIT}-mail@.service", f"{UNIT}-mail@0.service",
                  "other-mail@1.service", f"{UNIT}-Mail@1.service"):
        assert w.instance_of(UNIT, other) is None, other


def test_only_worker_templates_and_job_units_count_as_ours():
    ours = [f"{UNIT}-mail@.service", f"{UNIT}-job-cleanup.service", f"{UNIT}-job-cleanup.timer"]
    not_ours = [f"{UNIT}.service", f"{UNIT}-logs.service", f"{UNIT}-logs.timer", f"{UNIT}-mail@1.service",
                "my-app-prod-99999999-mail@.service", f"{UNIT}-job-.timer", "default.target.wants"]
    assert [n for n in ours + not_ours if w.is_ours(UNIT, n)] == ours


def test_the_spec_comes_from_config_workers_output():
    found = w.Spec.from_json({"stop_timeout": 7, "processes": {"mail": {"command": "m", "count": 2}},
                              "schedules": {"c": {"when": "daily", "command": "c", "timeout": 5}}})
    assert found == w.Spec(7, (w.Worker("mail", "m", 2),), (w.Job("c", "daily", "c", 5),))
    assert w.Spec.from_json({}) == w.Spec()


# --- the unit text ------------------------------------------------------------------------------------


def units(kind="system", **more):
    return systemd.Units("my-app", "prod", "/srv/app", UNIT, kind, "my-app", "8000", "python3", "51200", "5",
                         **{"memory_max_kb": "1048576", "tasks_max": "512", "systemd_version": 252, **more})


def test_a_worker_is_a_template_unit_restarted_always_and_sandboxed_like_the_web_unit():
    text = w.worker_service(units(), "mail", 10)
    assert text.startswith("""\
# Written by my-app's deploy/remote.sh for /srv/app ([process:mail]); every deploy rewrites it.
[Unit]
Description=my-app (prod) worker mail %i from /srv/app
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=0

[Service]
Type=exec
ExecStart=/bin/sh /srv/app/remote.sh exec_worker mail %i
Restart=always
RestartSec=1
TimeoutStopSec=10
SuccessExitStatus=143
""")
    assert "\n".join(units().common()) in text
    assert "User=my-app\n" in text and "ProtectSystem=strict\n" in text
    assert text.endswith("[Install]\nWantedBy=multi-user.target\n")


def test_a_user_workers_unit_has_no_account_and_starts_with_the_user_manager():
    text = w.worker_service(units("user", systemd_version=257), "mail", 30)
    assert "User=" not in text and "After=network.target\n" in text
    assert "RestartSteps=5\nRestartMaxDelaySec=30\n" in text and "TimeoutStopSec=30\n" in text
    assert text.endswith("[Install]\nWantedBy=default.target\n")


def test_a_job_is_a_oneshot_with_its_timeout_and_a_timer_accurate_to_a_second():
    job = w.Job("cleanup", "*:0/10", "flask cleanup", 600)
    service = w.job_service(units(), job)
    assert "[Service]\nType=oneshot\nExecStart=/bin/sh /srv/app/remote.sh exec_job cleanup\n" \
           "TimeoutStartSec=600\nTimeoutStopSec=30\n" in service
    assert "User=my-app\n" in service and "[Install]" not in service  # the timer starts it
    assert w.job_timer(units(), job) == """\
[Unit]
Description=my-app (prod) job cleanup: *:0/10

[Timer]
OnCalendar=*:0/10
AccuracySec=1s

[Install]
WantedBy=timers.target
"""


def test_the_jobs_units_are_written_on_the_jobs_host_only():
    on = w.files(units(), spec())
    assert sorted(on) == [f"{UNIT}-beat@.service", f"{UNIT}-job-cleanup.service", f"{UNIT}-job-cleanup.timer",
                          f"{UNIT}-mail@.service"]
    assert sorted(w.files(units(), spec(), jobs_here=False)) == [f"{UNIT}-beat@.service", f"{UNIT}-mail@.service"]


def test_the_logs_of_instances_and_jobs():
    assert (w.log_name("worker", "mail", 2), w.log_name("job", "cleanup")) == ("worker-mail@2.log", "job-cleanup.log")


def test_the_host_reads_process_job_and_jobs_host():
    settings = context.Settings.from_environment({"APP_DIR": "/srv/app", "PROCESS": "mail", "JOB": "cleanup",
                                                  "JOBS": "0"})
    assert (settings.process, settings.job, settings.jobs_here) == ("mail", "cleanup", False)
    assert context.Settings.from_environment({"APP_DIR": "/srv/app"}).jobs_here
