"""deploy/pack.py's checks on what goes into a release, on real files."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "deploy"))
import pack


def test_a_config_file_that_is_a_link_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "base.ini").write_text("[app]\n")
    (tmp_path / "elsewhere.ini").write_text("[app]\n")
    (tmp_path / "config" / "prod.ini").symlink_to(tmp_path / "elsewhere.ini")
    wheel = tmp_path / "app-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    with pytest.raises(pack.PackError, match=r"^config/prod\.ini is a symlink: a release carries files, not links"):
        pack.pack(wheel, [], "cp311-manylinux_2_36_x86_64", tmp_path / "out", "prod")


def test_a_release_carries_base_ini_and_its_environments_ini_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    for name in ("base", "dev", "test", "prod", "staging", "local"):
        (tmp_path / "config" / f"{name}.ini").write_text(f"# {name}\n")
    assert pack.configs("staging") == [Path("config/base.ini"), Path("config/staging.ini")]
    with pytest.raises(pack.PackError, match=r"^there is no config/qa\.ini: APP_ENV=qa is not an environment here "
                                             r"\(the environments: dev, prod, staging, test\)"):
        pack.configs("qa")
    with pytest.raises(pack.PackError, match=r"APP_ENV='\.\./x' is not an environment name"):
        pack.configs("../x")


def test_an_upload_leaves_out_exactly_what_the_host_caches():
    from host.releases import cacheable
    names = ["wheels/flask-3.1.3-py3-none-any.whl", "deploy/remote.sh", "deploy/gunicorn.conf.py", "config/prod.ini",
             "RELEASE", "static/app.css"]
    assert [n for n in names if pack.cacheable(n)] == [n for n in names if cacheable(n)] == names[:2]
