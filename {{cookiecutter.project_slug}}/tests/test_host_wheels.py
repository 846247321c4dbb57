"""deploy/host/wheels.py's own logic, by import: which wheels a release installs, and how an
unchanged distribution is taken from the running release's venv (its RECORD, read-only links,
scripts written anew). Installing with pypa's installer is the deploy tests' part."""
import base64
import hashlib
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "deploy"))
from host import wheels


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def old_venv(root: Path) -> dict[str, str]:
    """A venv as installer leaves one: a package, its .pyc, a script and the dist-info."""
    paths = wheels.scheme(root, "_")
    site, bin_dir = Path(paths["purelib"]), Path(paths["scripts"])
    files = {site / "six" / "__init__.py": b"x = 1\n", site / "six-1.0.dist-info" / "METADATA": b"Name: six\n",
             bin_dir / "six": f"#!{bin_dir / 'python'}\nimport six\n".encode(), site / "other.py": b"not six's\n"}
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    pyc = Path(wheels.cache_from_source(str(site / "six" / "__init__.py")))
    pyc.parent.mkdir()
    pyc.write_bytes(b"bytecode")
    module = record_hash(files[site / "six" / "__init__.py"])
    rows = [f"six/__init__.py,{module},6", "six-1.0.dist-info/METADATA,,",
            f"../../../bin/six,{record_hash(files[bin_dir / 'six'])},{len(files[bin_dir / 'six'])}",
            "six-1.0.dist-info/RECORD,,"]
    (site / "six-1.0.dist-info" / "RECORD").write_text("\n".join(rows) + "\n")
    return paths


def test_an_unchanged_distribution_is_linked_read_only_with_its_bytecode_and_its_script_rewritten(tmp_path):
    old = old_venv(tmp_path / "old")
    new = wheels.scheme(tmp_path / "new", "_")
    placed = wheels.link_distribution(old, new, "six-1.0.dist-info")
    old_site, new_site = Path(old["purelib"]), Path(new["purelib"])
    assert placed == 4  # module, its .pyc, METADATA, the script
    for name in ("six/__init__.py", "six-1.0.dist-info/METADATA", "six/__pycache__"):
        source, linked = old_site / name, new_site / name
        if source.is_dir():
            (source,), (linked,) = source.iterdir(), linked.iterdir()
        assert linked.stat().st_ino == source.stat().st_ino, name
        assert linked.stat().st_mode & 0o222 == 0, name  # shared, so nobody may write it
    assert not (new_site / "other.py").exists()  # not in six's RECORD: another distribution's
    script = Path(new["scripts"]) / "six"
    assert script.read_text() == f"#!{Path(new['scripts']) / 'python'}\nimport six\n"
    assert script.stat().st_nlink == 1 and script.stat().st_mode & 0o777 == 0o755
    record = (new_site / "six-1.0.dist-info" / "RECORD").read_text()
    assert f"../../../bin/six,{record_hash(script.read_bytes())},{len(script.read_bytes())}" in record
    assert record.count("\n") == 4 and (new_site / "six-1.0.dist-info" / "RECORD").stat().st_nlink == 1


def test_a_record_naming_a_file_outside_the_venv_links_nothing(tmp_path):
    old = old_venv(tmp_path / "old")
    record = Path(old["purelib"]) / "six-1.0.dist-info" / "RECORD"
    record.write_text(record.read_text() + "../../../../../etc/passwd,,\n")
    new = wheels.scheme(tmp_path / "new", "_")
    with pytest.raises(OSError, match="outside its venv"):
        wheels.link_distribution(old, new, "six-1.0.dist-info")
    assert not [p for p in (tmp_path / "new").rglob("*") if p.is_file()]  # removed what it had placed


def test_linking_never_writes_over_a_file_already_there(tmp_path):
    old = old_venv(tmp_path / "old")
    new = wheels.scheme(tmp_path / "new", "_")
    taken = Path(new["purelib"]) / "six" / "__init__.py"
    taken.parent.mkdir(parents=True)
    taken.write_bytes(b"another wheel's")
    with pytest.raises(FileExistsError):
        wheels.link_distribution(old, new, "six-1.0.dist-info")
    assert taken.read_bytes() == b"another wheel's"
    assert (Path(old["purelib"]) / "six" / "__init__.py").read_bytes() == b"x = 1\n"


@pytest.mark.parametrize("head, expected", [
    (b"#!/r/1/venv/bin/python\nimport x\n", b"#!/r/2/venv/bin/python\nimport x\n"),
    (b"#!/bin/sh\n'''exec' /r/1/venv/bin/python \"$0\" \"$@\"\n' '''\nimport x\n",
     b"#!/bin/sh\n'''exec' /r/2/venv/bin/python \"$0\" \"$@\"\n' '''\nimport x\n"),
    (b"#!/usr/bin/env python3\nimport x\n", None),
    (b"\x7fELF binary", None),
])
def test_scripts_are_pointed_at_the_new_venv_and_nothing_else_is_changed(head, expected):
    assert wheels.retarget_script(head, "/r/1/venv/bin/python", "/r/2/venv/bin/python") == expected


def test_a_release_installs_every_wheel_of_its_sums_but_installers_own(tmp_path):
    (tmp_path / "SHA256SUMS").write_text("aa  wheels/six-1.0-py3-none-any.whl\nbb  wheels/installer-1.1.0-py3-none-any.whl\n"
                                         "cc  RELEASE\ndd  wheels/app-1.0-py3-none-any.whl\n")
    assert wheels.release_wheels(tmp_path) == [("app-1.0-py3-none-any.whl", "dd"), ("six-1.0-py3-none-any.whl", "aa")]
    assert wheels.read_map(tmp_path) == {}  # a venv pip made: nothing to link, all installed
    (tmp_path / wheels.MAP).write_text("aa six-1.0-py3-none-any.whl six-1.0.dist-info\n")
    assert wheels.read_map(tmp_path) == {"aa": ("six-1.0-py3-none-any.whl", "six-1.0.dist-info")}


def test_the_venv_scheme_is_the_venvs_own_folders(tmp_path):
    paths = wheels.scheme(tmp_path, "six")
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert paths["purelib"] == str(tmp_path / "lib" / version / "site-packages")
    assert paths["scripts"] == str(tmp_path / "bin") and paths["data"] == str(tmp_path)
    assert os.path.commonpath([paths["headers"], str(tmp_path)]) == str(tmp_path)


@pytest.mark.parametrize("files", [3, 200])
def test_every_file_added_is_compiled_by_the_end_alone_or_in_the_pool(tmp_path, files):
    """A few files are compiled here; many go to a pool of processes while more are added."""
    sources = [tmp_path / f"m{n}.py" for n in range(files)]
    for path in sources:
        path.write_text(f"x = {len(path.name)}\n")
    (tmp_path / "broken.py").write_text("def (:\n")  # skipped, as pip skips it
    compiler = wheels.Compiler()
    compiler.add([str(p) for p in sources[: files // 2]] + [str(tmp_path / "broken.py")])
    compiler.add([str(p) for p in sources[files // 2:]])
    compiler.finish()
    assert all(Path(wheels.cache_from_source(str(p))).is_file() for p in sources)
    assert (compiler.pool is not None) == (files >= wheels.Compiler.MANY and compiler.workers > 1)
