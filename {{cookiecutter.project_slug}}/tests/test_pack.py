"""deploy/pack.py's checks on what goes into a release, on real files."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "deploy"))
import pack


def test_a_config_file_that_is_a_link_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "elsewhere.ini").write_text("[app]\n")
    (tmp_path / "config" / "prod.ini").symlink_to(tmp_path / "elsewhere.ini")
    wheel = tmp_path / "app-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    with pytest.raises(pack.PackError, match=r"^config/prod\.ini is a symlink: a release carries files, not links"):
        pack.pack(wheel, [], "cp311-manylinux_2_36_x86_64", tmp_path / "out")
