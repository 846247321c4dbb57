"""ruff's default rules find nothing in a bake, whatever the answers: the generated project's
`make test` runs `make lint` first, so one finding would fail it on day one.

Fast: real bakes, the pinned ruff from the template's own venv (requirements-dev.txt), no
project venv.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import bake

RUFF = Path(sys.executable).with_name("ruff")

# The database variants hold different code; the newest Python takes the other branch of
# models.py's datetime import (datetime.UTC, which ruff asks for from 3.11 on), and the
# quoted answers land in docstrings and string literals.
ANSWER_SETS = {
    "none": {"database": "none"},
    "sqlite": {"database": "sqlite"},
    "postgresql": {"database": "postgresql"},
    "postgresql-3.13-quoted": {"database": "postgresql", "python_version": "3.13",
                               "project_name": 'Zoë\'s "Café" App', "project_slug": "zoes-cafe",
                               "description": 'It\'s a "café" – ünïcode', "author_name": 'Zoë "Z" O\'Brien'},
}


@pytest.mark.parametrize("answers", ANSWER_SETS.values(), ids=list(ANSWER_SETS))
def test_ruff_finds_nothing_in_a_bake(tmp_path, answers):
    project = bake(tmp_path, **answers)
    result = subprocess.run([RUFF, "check", "--no-cache", "--output-format", "concise", "."],
                            cwd=project, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_template_tests_with_the_ruff_the_project_pins(tmp_path):
    """One version in both requirements-dev.txt files: a bump in one alone fails here."""
    project = bake(tmp_path, database="none")
    pinned = re.search(r"^ruff==(\S+)$", (project / "requirements-dev.txt").read_text(), re.MULTILINE)
    assert pinned, "the generated requirements-dev.txt does not pin ruff"
    version = subprocess.run([RUFF, "--version"], capture_output=True, text=True, check=True).stdout.split()
    assert version == ["ruff", pinned[1]], f"the template's .venv has {' '.join(version)}: run make venv"
