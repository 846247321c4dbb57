"""The generated project's GitHub Actions workflows, .github/workflows/ci.yml and deploy.yml,
for every database answer and other minimum Pythons.

Each bake's workflows are YAML that kept GitHub's `${{ … }}` expressions through Jinja,
match GitHub's workflow schema (`check-jsonschema --builtin-schema vendor.github-workflows`,
a schema the package vendors), and leave zizmor (`--offline`, the auditor persona, no
config, no ignore comments honoured) with nothing to report. Then what a user would check
by eye: every action is `actions/…` pinned by full sha; ci.yml's matrix is the minimum
Python and 3.13; deploy.yml keeps host-key checking on, has one deploy per environment at
a time, reads secrets and inputs only through `env:`, writes the key 0600 without showing
it; docs/ci.md ("Deploy from CI") names every secret deploy.yml reads.

Fast: real bakes, the tools from the template's own venv (requirements-dev.txt), no
project venv, no network.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import bake, missing

BIN = Path(sys.executable).parent
NEWEST_PYTHON = "3.13"
WORKFLOWS = ("ci.yml", "deploy.yml")
ANSWER_SETS = {
    "none": {"database": "none"},
    "sqlite": {"database": "sqlite"},
    "postgresql": {"database": "postgresql"},
    "sqlite-3.11": {"database": "sqlite", "python_version": "3.11"},
    "postgresql-3.13": {"database": "postgresql", "python_version": "3.13"},  # the newest: one entry
}
PINNED = re.compile(r"^actions/[A-Za-z0-9_.-]+@[0-9a-f]{40}$")
TAG_COMMENT = re.compile(r"#\s*v\d+\.\d+\.\d+\s*$")
# Turning host-key checking off, or accepting an unknown key on first sight.
CHECKING_OFF = re.compile(r"StrictHostKeyChecking\s*[= ]\s*[\"']?(no|off|accept-new)\b|UserKnownHostsFile\s*[= ]\s*/dev/null",
                          re.IGNORECASE)
DEPLOY_ENV = "${{ inputs.app_env || 'prod' }}"


def tool(name: str) -> Path:
    path = BIN / name
    if not path.is_file():
        missing(f"{name} is not in the template's .venv ({BIN}): make venv (requirements-dev.txt pins it)")
    return path


@pytest.fixture(scope="module")
def bakes(tmp_path_factory) -> dict[str, Path]:
    return {name: bake(tmp_path_factory.mktemp(name), **answers) for name, answers in ANSWER_SETS.items()}


@pytest.fixture(params=ANSWER_SETS, ids=list(ANSWER_SETS))
def baked(request, bakes) -> tuple[Path, dict[str, str]]:
    answers = {"database": "sqlite", "python_version": "3.10", **ANSWER_SETS[request.param]}
    return bakes[request.param], answers


def workflow_path(project: Path, name: str) -> Path:
    return project / ".github" / "workflows" / name


def load(project: Path, name: str) -> dict:
    return yaml.safe_load(workflow_path(project, name).read_text(encoding="utf-8"))


def triggers(workflow: dict) -> dict:
    """`on:`, which YAML 1.1 (PyYAML) reads as the key True."""
    return workflow["on"] if "on" in workflow else workflow[True]


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def run_scripts(workflow: dict) -> list[str]:
    return [step["run"] for step in steps(workflow) if "run" in step]


def step_using(workflow: dict, action: str) -> dict:
    (step,) = [s for s in steps(workflow) if s.get("uses", "").startswith(f"actions/{action}@")]
    return step


def expressions(node, path=()):
    """(path, text) of every string holding a `${{ … }}` expression."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from expressions(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from expressions(value, (*path, index))
    elif isinstance(node, str) and "${{" in node:
        yield path, node


def test_workflows_are_yaml_and_keep_githubs_expressions(baked):
    project, _ = baked
    for name in WORKFLOWS:
        text = workflow_path(project, name).read_text(encoding="utf-8")
        assert isinstance(load(project, name), dict), name
        assert "${{" in text, f"{name}: Jinja ate GitHub's expressions (a missing raw block)"
        assert not [mark for mark in ("{%", "{#", "{{ cookiecutter", "{{cookiecutter") if mark in text], name


def test_workflows_match_githubs_schema(baked):
    project, _ = baked
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                             *(workflow_path(project, name) for name in WORKFLOWS)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def zizmor(*paths: Path) -> list[dict]:
    """zizmor's findings, every audit that works offline, nothing ignored or filtered."""
    result = subprocess.run([tool("zizmor"), "--offline", "--no-config", "--no-ignores", "--persona", "auditor",
                             "--strict-collection", "--no-progress", "--format", "json", *paths],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.strip(), f"zizmor printed no report (exit {result.returncode}): {result.stderr}"
    return json.loads(result.stdout)


def test_zizmor_finds_nothing(baked):
    project, _ = baked
    findings = zizmor(*(workflow_path(project, name) for name in WORKFLOWS))
    assert findings == [], json.dumps([{k: f[k] for k in ("ident", "desc", "locations")} for f in findings], indent=1)


def test_zizmor_would_catch_an_injection_and_an_unpinned_action(bakes, tmp_path):
    """The audit above is a real one: spoil deploy.yml twice and zizmor names both."""
    text = workflow_path(bakes["sqlite"], "deploy.yml").read_text(encoding="utf-8")
    spoiled = re.sub(r"actions/checkout@[0-9a-f]{40}", "actions/checkout@v7", text)
    spoiled = spoiled.replace('make deploy APP_ENV="$APP_ENV"', "make deploy APP_ENV=${{ inputs.app_env }}")
    assert spoiled.count("@v7") == 1 and "APP_ENV=${{" in spoiled
    (tmp_path / "deploy.yml").write_text(spoiled, encoding="utf-8")
    assert {"template-injection", "unpinned-uses"} <= {f["ident"] for f in zizmor(tmp_path / "deploy.yml")}


def test_every_action_is_githubs_own_pinned_by_full_sha(baked):
    project, _ = baked
    pins: dict[str, set[str]] = {}
    for name in WORKFLOWS:
        lines = [line for line in workflow_path(project, name).read_text(encoding="utf-8").splitlines()
                 if re.match(r"\s*(- )?uses:", line)]
        used = [step["uses"] for step in steps(load(project, name)) if "uses" in step]
        assert len(lines) == len(used) > 0, name
        for line, uses in zip(lines, used, strict=True):
            assert PINNED.match(uses), f"{name}: {uses} is not actions/<name>@<40 hex digits>"
            assert TAG_COMMENT.search(line), f"{name}: {line.strip()} has no # vX.Y.Z comment"
            action, sha = uses.split("@")
            pins.setdefault(action, set()).add(f"{sha} {line.split('#')[1].strip()}")
    assert {action: len(shas) for action, shas in pins.items()} == dict.fromkeys(pins, 1), pins
    for name in WORKFLOWS:  # and the checkout leaves no token in .git/config for later steps
        assert step_using(load(project, name), "checkout")["with"]["persist-credentials"] is False, name


def test_both_workflows_may_only_read_the_repository(baked):
    project, _ = baked
    for name in WORKFLOWS:
        workflow = load(project, name)
        assert workflow["permissions"] == {"contents": "read"}, name
        assert not [job for job in workflow["jobs"].values() if "permissions" in job], name


def test_ci_runs_make_test_on_the_minimum_and_the_newest_python(baked):
    project, answers = baked
    ci = load(project, "ci.yml")
    assert set(triggers(ci)) == {"push", "pull_request"}
    (job,) = ci["jobs"].values()
    minimum = answers["python_version"]
    newest = [NEWEST_PYTHON] if int(minimum.split(".")[1]) < int(NEWEST_PYTHON.split(".")[1]) else []
    assert job["strategy"]["matrix"]["python"] == [minimum, *newest]
    setup = step_using(ci, "setup-python")["with"]
    assert setup["python-version"] == "${{ matrix.python }}"
    assert setup["cache"] == "pip"
    assert setup["cache-dependency-path"].split() == ["requirements.txt", "requirements-dev.txt"]
    assert run_scripts(ci)[-1] == "make test"


def test_postgresql_is_installed_only_for_a_postgresql_project(baked):
    project, answers = baked
    for name in WORKFLOWS:
        installs = [s for s in run_scripts(load(project, name)) if "apt-get install" in s]
        if answers["database"] == "postgresql":
            assert len(installs) == 1 and installs[0].split()[-1] == "postgresql", name
        else:
            assert installs == [], name
            assert "postgres" not in workflow_path(project, name).read_text(encoding="utf-8").lower(), name


def test_deploy_keeps_host_key_checking_on(baked):
    project, _ = baked
    text = workflow_path(project, "deploy.yml").read_text(encoding="utf-8")
    assert not CHECKING_OFF.search(text), CHECKING_OFF.search(text)
    assert "Host-key checking stays on" in text  # and the workflow says so
    (job,) = load(project, "deploy.yml")["jobs"].values()
    assert "-o StrictHostKeyChecking=yes" in job["env"]["SSH_OPTS"]


def test_deploy_runs_on_a_manual_run_or_a_version_tag_one_per_environment(baked):
    project, _ = baked
    deploy = load(project, "deploy.yml")
    on = triggers(deploy)
    assert set(on) == {"workflow_dispatch", "push"}
    assert on["push"] == {"tags": ["v*"]}
    app_env = on["workflow_dispatch"]["inputs"]["app_env"]
    # The environments that deploy: every config/<env>.ini but the defaults, make run's and make test's.
    deployable = sorted({p.stem for p in (project / "config").glob("*.ini")} - {"base", "local", "dev", "test"})
    assert (app_env["type"], app_env["default"], app_env["options"]) == ("choice", "prod", deployable)
    assert deploy["concurrency"] == {"group": "deploy-" + DEPLOY_ENV, "cancel-in-progress": False}
    (job,) = deploy["jobs"].values()
    assert job["environment"] == DEPLOY_ENV
    assert job["env"]["APP_ENV"] == DEPLOY_ENV


def test_deploy_reads_secrets_and_inputs_only_through_env(baked):
    """zizmor's template-injection rule, and more: no expression at all inside a script."""
    project, _ = baked
    deploy = load(project, "deploy.yml")
    for path, text in expressions(deploy):
        if re.search(r"\b(secrets|inputs)\.", text):
            assert "env" in path or path in (("concurrency", "group"),) or path[-1] in ("environment", "name"), path
    assert not [s for s in run_scripts(deploy) if "${{" in s]
    assert len(re.findall(r"\$\{\{\s*secrets\.", workflow_path(project, "deploy.yml").read_text())) == 2


def test_workflows_call_only_make_targets_the_project_has(baked):
    """`make plan` first, into the job summary, then `make deploy`."""
    project, _ = baked
    makefile = (project / "Makefile").read_text(encoding="utf-8")
    targets = {name for line in re.findall(r"^([a-z][a-z0-9 -]*):(?!=)", makefile, re.MULTILINE)
               for name in line.split()}
    called = {name: re.findall(r"\bmake\s+([a-z][a-z0-9-]*)", "\n".join(run_scripts(load(project, name))))
              for name in WORKFLOWS}
    assert called == {"ci.yml": ["test"], "deploy.yml": ["plan", "deploy"]}
    assert {"test", "plan", "deploy"} <= targets
    (plan,) = [s["run"] for s in steps(load(project, "deploy.yml")) if s.get("name") == "make plan"]
    assert 'GITHUB_STEP_SUMMARY' in plan and plan.rstrip().endswith('exit "$status"')  # a refused plan stops the job


def key_step(project: Path) -> dict:
    (step,) = [s for s in steps(load(project, "deploy.yml")) if "DEPLOY_SSH_KEY" in s.get("env", {})]
    return step


def test_the_key_step_writes_key_and_known_host_0600_without_showing_them(bakes, tmp_path):
    """The step's script as the runner would run it (bash -e), the secrets given as env."""
    home = tmp_path / "home"
    home.mkdir()
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
    known = "[myserver]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE"
    script = key_step(bakes["sqlite"])["run"]
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "DEPLOY_SSH_KEY": key, "DEPLOY_KNOWN_HOSTS": known}
    done = subprocess.run(["bash", "-e", "-c", script], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "PRIVATE KEY" not in done.stdout + done.stderr and "b3Blbn" not in done.stdout + done.stderr
    written = home / ".ssh" / "deploy_key"
    assert written.read_text() == key + "\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / ".ssh").stat().st_mode) == 0o700
    assert (home / ".ssh" / "known_hosts").read_text() == known + "\n"
    for unset in ("DEPLOY_SSH_KEY", "DEPLOY_KNOWN_HOSTS"):
        shutil.rmtree(home / ".ssh", ignore_errors=True)
        done = subprocess.run(["bash", "-e", "-c", script], env={**env, unset: ""}, capture_output=True, text=True,
                              timeout=30, check=False)
        assert done.returncode != 0 and f"secret {unset} is not set" in done.stdout, done.stdout + done.stderr
        assert not (home / ".ssh" / "deploy_key").exists()


def test_run_scripts_pass_shellcheck(baked):
    if not shutil.which("shellcheck"):
        missing("shellcheck not found: apt-get install shellcheck")
    project, _ = baked
    for name in WORKFLOWS:
        for script in run_scripts(load(project, name)):
            result = subprocess.run(["shellcheck", "-s", "bash", "-S", "warning", "-"], input=script,
                                    capture_output=True, text=True, timeout=30, check=False)
            assert result.returncode == 0, f"{name}:\n{script}\n{result.stdout}"


def ci_page(project: Path) -> str:
    """docs/ci.md, the generated project's "Deploy from CI" page, less its title."""
    page = project / "docs" / "ci.md"
    assert page.is_file(), "the project has no docs/ci.md"
    found = re.match(r"# Deploy from CI\n(.*)", page.read_text(encoding="utf-8"), re.DOTALL)
    assert found, "docs/ci.md does not open with '# Deploy from CI'"
    return found[1]


def test_ci_page_names_every_secret_deploy_reads_and_how_to_make_it(baked):
    project, answers = baked
    section = ci_page(project)
    read = re.findall(r"secrets\.([A-Za-z0-9_]+)", workflow_path(project, "deploy.yml").read_text(encoding="utf-8"))
    assert read == ["DEPLOY_SSH_KEY", "DEPLOY_KNOWN_HOSTS"]
    assert [name for name in read if f"**`{name}`**" not in section] == []
    assert section.index("DEPLOY_SSH_KEY") < section.index("DEPLOY_KNOWN_HOSTS")  # in the order to make them
    for command in ("ssh-keygen -t ed25519 -f deploy_key -N ''", "authorized_keys", "ssh-keyscan -p PORT myserver",
                    "ssh-keygen -lf", 'op read "op://vault/item/field" | make config-set SETTING=app.secret_key',
                    "bw get password item-name | make config-set SETTING=app.secret_key"):
        assert command in section, command
    minimum = answers["python_version"]
    assert f"on Python {minimum}{' and 3.13' if minimum != NEWEST_PYTHON else ''}," in section
