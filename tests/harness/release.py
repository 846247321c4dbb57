"""An unpacked release's venv, built as the host builds it: `python3 -m venv --without-pip`,
then the host program's deploy/host/wheels.py in that venv's Python, with pypa's installer
from the release's own wheel (no pip, no index)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path


def install_as_the_host(release: Path, env: dict[str, str] | None = None) -> dict:
    """RELEASE/venv with every wheel of the release; what wheels.py reported."""
    bundle = release / "deploy" / "remote.sh"  # the host program, zipped after the bootstrap
    code = "import sys; sys.path.insert(0, sys.argv[1]); from host.wheels import BOOT; print(BOOT)"
    boot = subprocess.run(["python3", "-S", "-c", code, bundle],
                          capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["python3", "-m", "venv", "--without-pip", release / "venv"], check=True, env=env)
    (tool,) = (release / "wheels").glob("installer-*.whl")
    filled = subprocess.run([release / "venv" / "bin" / "python", "-I", "-S", "-c", boot, tool, bundle, release, "-"],
                            capture_output=True, text=True, check=True, env=env)
    return json.loads(filled.stdout)
