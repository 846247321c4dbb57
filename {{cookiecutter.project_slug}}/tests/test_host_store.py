"""deploy/host/store.py by import: where the host's store of installed distributions lives
(only in this account's own folders), what a venv gives it and takes from it, and what a
prune removes. A whole install through it is the template's tests' part."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "deploy"))
from host import store, wheels
from test_host_wheels import old_venv


def a_store(tmp_path: Path) -> store.Store:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    made = store.Store.beside(tmp_path, str(home))
    assert made and made.base == home.joinpath(*store.PARTS, store.python_key())
    return made


def test_the_store_is_made_in_the_accounts_own_folders(tmp_path):
    assert oct(a_store(tmp_path).base.stat().st_mode & 0o777) == "0o755"


def test_a_home_others_may_write_or_a_planted_link_means_no_store(tmp_path):
    open_home = tmp_path / "open"
    open_home.mkdir()
    os.chmod(open_home, 0o777)
    assert store.Store.beside(tmp_path, str(open_home)) is None
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir(mode=0o700)
    elsewhere.mkdir()
    (home / ".cache").symlink_to(elsewhere)
    assert store.Store.beside(tmp_path, str(home)) is None
    assert list(elsewhere.iterdir()) == []  # nothing made through the link
    assert store.Store.beside(tmp_path, "relative/home") is None


def test_what_one_venv_installed_another_links_from_the_store_read_only(tmp_path):
    shelf = a_store(tmp_path)
    first = old_venv(tmp_path / "first")
    wheels.donate(shelf, first, [("six-1.0-py3-none-any.whl", "ab" * 32, "six-1.0.dist-info")])
    assert shelf.find("ab" * 32, "six-1.0-py3-none-any.whl") == "six-1.0.dist-info"
    assert shelf.find("ab" * 32, "six-2.0-py3-none-any.whl") is None  # the digest, with another name
    second = wheels.scheme(tmp_path / "second", "_")
    wheels.link_distribution(wheels.entry_scheme(shelf, "ab" * 32), second, "six-1.0.dist-info")
    module = Path(first["purelib"]) / "six" / "__init__.py"
    linked = Path(second["purelib"]) / "six" / "__init__.py"
    assert linked.samefile(module) and module.stat().st_mode & 0o222 == 0
    assert Path(wheels.cache_from_source(str(linked))).read_bytes() == b"bytecode"
    script = (Path(second["scripts"]) / "six").read_text()
    assert script.startswith(f"#!{Path(second['scripts']) / 'python'}\n")  # this venv's, not the store's


def test_a_prune_removes_the_entries_no_venv_links_and_unfinished_ones(tmp_path):
    shelf = a_store(tmp_path)
    kept, dropped = old_venv(tmp_path / "kept"), old_venv(tmp_path / "dropped")
    wheels.donate(shelf, kept, [("six-1.0-py3-none-any.whl", "aa" * 32, "six-1.0.dist-info")])
    wheels.donate(shelf, dropped, [("six-1.0-py3-none-any.whl", "bb" * 32, "six-1.0.dist-info")])
    (shelf.base / ("cc" * 32)).mkdir()  # a donation that never finished
    for path in sorted(Path(tmp_path / "dropped").rglob("*"), reverse=True):  # the venv's release pruned
        path.unlink() if not path.is_dir() else path.rmdir()
    wheels.donate(shelf, kept, [])  # the next donation prunes
    assert sorted(p.name for p in shelf.base.iterdir() if not p.name.startswith(".")) == ["aa" * 32]
