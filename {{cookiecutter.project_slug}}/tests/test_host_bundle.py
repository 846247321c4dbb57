"""The bundle the Makefile sends (build/remote.sh) and the folder the host unpacks it into,
so that Python keeps the host program's compiled modules (deploy/host/__main__.py)."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

DEPLOY = Path(__file__).parents[1] / "deploy"
sys.path.insert(0, str(DEPLOY))
import bundle

_spec = importlib.util.spec_from_file_location("host_main", DEPLOY / "host" / "__main__.py")
host_main = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(host_main)


def app_with_bundle(tmp_path, monkeypatch) -> Path:
    app = tmp_path / "app"
    app.mkdir(mode=0o755)
    os.chmod(app, 0o755)
    bundle.bundle(app / "remote.sh")
    monkeypatch.setenv("APP_DIR", str(app))
    return app


def run_bundle(app: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return subprocess.run([sys.executable, "-S", str(app / "remote.sh"), *args], env={**env, "APP_DIR": str(app)},
                          capture_output=True, text=True, check=False)


def test_the_bundle_runs_from_its_folder_where_python_keeps_the_compiled_modules(tmp_path, monkeypatch):
    app = app_with_bundle(tmp_path, monkeypatch)
    stale = app / ".host" / "0123456789abcdef"  # a bundle sent before this one
    stale.mkdir(parents=True)
    first = run_bundle(app, "targets", "--make")
    assert first.returncode == 0 and first.stdout.startswith("HOST_COMMANDS := "), first.stderr
    (here,) = (app / ".host").iterdir()
    assert here.name != stale.name and (here / "host" / "cli.py").is_file()
    compiled = sorted(p.name.split(".")[0] for p in (here / "host" / "__pycache__").iterdir())
    assert "cli" in compiled and "context" in compiled
    again = run_bundle(app, "targets", "--make")
    assert again.stdout == first.stdout
    assert host_main.unpacked(str(app / "remote.sh")) == str(here)


def test_a_folder_another_account_could_change_is_never_run_from(tmp_path, monkeypatch):
    app = app_with_bundle(tmp_path, monkeypatch)
    os.chmod(app, 0o775)
    assert host_main.unpacked(str(app / "remote.sh")) is None
    assert not (app / ".host").exists()
    os.chmod(app, 0o755)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o777)
    os.chmod(elsewhere, 0o777)
    (app / ".host").symlink_to(elsewhere)  # planted: a link to a folder anyone writes
    assert host_main.unpacked(str(app / "remote.sh")) is None
    assert list(elsewhere.iterdir()) == []
    result = run_bundle(app, "targets", "--make")  # the zip itself still runs
    assert result.returncode == 0 and result.stdout.startswith("HOST_COMMANDS := ")


def test_only_app_dirs_own_copy_is_unpacked(tmp_path, monkeypatch):
    app = app_with_bundle(tmp_path, monkeypatch)
    other = tmp_path / "remote.sh"
    other.write_bytes((app / "remote.sh").read_bytes())  # a copy elsewhere, or make plan's memfd
    assert host_main.unpacked(str(other)) is None
    assert not (app / ".host").exists()
