"""The generated deploy workflow's steps, run as a GitHub runner would run them, against the
private sshd: every `run:` step with GitHub's bash (`bash --noprofile --norc -eo pipefail`),
its `${{ … }}` replaced from a table that holds the inputs and the secrets, `uses:` steps
skipped (the checkout is the baked project, its Python the bake's). The runner's ~/.ssh is
its own: a private mount over this account's, so the key the workflow writes never reaches
this machine's. The host and user come from config/prod.ini, as the workflow says; a host
that answers with another key is refused before anything is sent."""
from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import missing
from harness.app import App, healthz
from harness.sshd import free_port

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
STEPS = ["ssh key and known host", "make plan", "make deploy", "remove the key"]


def substitute(text: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        assert match[1] in values, f"the simulated runner has no value for ${{{{ {match[1]} }}}}"
        return values[match[1]]
    return EXPRESSION.sub(value, text)


def run_workflow(project: Path, values: dict[str, str], runner: Path) -> list[tuple[str, subprocess.CompletedProcess]]:
    """Run deploy.yml's job as a runner does: step by step, stopping at the first failure but
    for `if: always()` steps. Returns (step name, result) for each step run."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        missing("the simulated runner needs root and unshare (util-linux) for its own ~/.ssh")
    workflow = yaml.safe_load((project / ".github" / "workflows" / "deploy.yml").read_text())
    job = workflow["jobs"]["deploy"]
    job_env = {k: substitute(str(v), values) for k, v in job.get("env", {}).items()}
    home_ssh = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh"  # where ssh looks, whatever HOME says
    home_ssh.mkdir(mode=0o700, exist_ok=True)
    (runner / "ssh").mkdir(mode=0o700, exist_ok=True)
    base_env = {"PATH": os.environ["PATH"], "HOME": str(home_ssh.parent), "LANG": "C.UTF-8", "CI": "true",
                "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(runner / "summary.md")}
    ran, failed = [], False
    for number, step in enumerate(job["steps"]):
        if "uses" in step or (failed and "always()" not in str(step.get("if", ""))):
            continue
        script = runner / f"step{number}.sh"
        script.write_text(substitute(step["run"], values))
        env = {**base_env, **job_env, **{k: substitute(str(v), values) for k, v in step.get("env", {}).items()}}
        private_ssh = 'mount --bind "$0" "$1" && exec bash --noprofile --norc -eo pipefail "$2"'
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", private_ssh,
                                 str(runner / "ssh"), str(home_ssh), str(script)],
                                cwd=project, env=env, capture_output=True, text=True, timeout=900)
        ran.append((step["name"], result))
        failed = failed or result.returncode != 0
    return ran


@pytest.fixture()
def host_in_prod_ini(baked_project, sshd_host, tmp_path):
    """config/prod.ini names the host, its ssh port and user, a directory and a port, as a
    user's would (CI has no ~/.ssh/config); put back afterwards."""
    prod = baked_project / "config" / "prod.ini"
    saved = prod.read_text()
    assert "[deploy]" not in saved and "[server]\n" in saved
    app = App(baked_project, sshd_host, tmp_path / "app", free_port())
    prod.write_text(saved.replace("[server]\n", f"[server]\nport = {app.port}\n") +
                    f"\n[deploy]\nhost = 127.0.0.1\nssh_port = {sshd_host.port}\nuser = {sshd_host.user}\n"
                    f"dir = {app.dir}\n")
    yield app
    prod.write_text(saved)
    app.stop_everything()


def secrets(sshd_host, known_hosts: str) -> dict[str, str]:
    return {"inputs.app_env || 'prod'": "prod",  # a version tag: no input
            "secrets.DEPLOY_SSH_KEY": Path(sshd_host.identity).read_text(),
            "secrets.DEPLOY_KNOWN_HOSTS": known_hosts}


def test_the_deploy_workflow_plans_then_deploys_and_the_app_serves(baked_project, sshd_host, host_in_prod_ini,
                                                                   tmp_path):
    app, runner = host_in_prod_ini, tmp_path / "runner"
    runner.mkdir()
    ran = run_workflow(baked_project, secrets(sshd_host, sshd_host.known_hosts.read_text()), runner)
    said = {name: result.stdout + result.stderr for name, result in ran}
    assert [name for name, _ in ran] == STEPS, said
    for name, result in ran:
        assert result.returncode == 0, f"step {name!r} failed:\n{said[name]}"
    assert healthz(app.port)["release"] == app.current()
    summary = (runner / "summary.md").read_text()
    assert summary.startswith("### The plan\n```\n") and "\n--- 127.0.0.1 (cp3" in summary, summary
    assert "  would go: my-flask-app 0.1.0 for " in summary and "plan: the deploy would go ahead" in summary, summary
    assert not (runner / "ssh" / "deploy_key").exists()  # removed by the last step
    assert sshd_host.known_hosts.read_text().strip() in (runner / "ssh" / "known_hosts").read_text()
    assert (runner / "ssh").stat().st_mode & 0o777 == 0o700


def test_a_host_that_answers_with_another_key_is_refused_before_anything_is_sent(baked_project, sshd_host,
                                                                                 host_in_prod_ini, tmp_path):
    app, runner = host_in_prod_ini, tmp_path / "runner"
    runner.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()[:2]
    ran = run_workflow(baked_project, secrets(sshd_host, f"[127.0.0.1]:{sshd_host.port} {' '.join(other)}\n"), runner)
    said = {name: result.stdout + result.stderr for name, result in ran}
    assert [name for name, _ in ran] == ["ssh key and known host", "make plan", "remove the key"], said
    assert ran[1][1].returncode != 0 and re.search(r"refused: cannot reach \S*127\.0\.0\.1 over ssh", said["make plan"]), said
    assert not app.dir.exists()
    assert not (runner / "ssh" / "deploy_key").exists()
