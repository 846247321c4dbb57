"""deploy/target.py: what a host runs, the wheel platforms it takes, what a release needs."""
import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("target", Path(__file__).parents[1] / "deploy" / "target.py")
target = importlib.util.module_from_spec(_spec)
sys.modules["target"] = target  # dataclasses look their module up by name
_spec.loader.exec_module(target)
Target, TargetError = target.Target, target.TargetError


def facts(python="3.12.1", impl="cpython", machine="x86_64", libc="glibc 2.36"):
    return {"python_version": python, "implementation": impl, "machine": machine, "libc": libc}


@pytest.mark.parametrize("given, expected", [
    (facts(), "cp312-manylinux_2_36_x86_64"),
    (facts(python="3.10.12", libc="glibc 2.35"), "cp310-manylinux_2_35_x86_64"),
    (facts(python="3.13.0", machine="aarch64", libc="glibc 2.41"), "cp313-manylinux_2_41_aarch64"),
    (facts(machine="arm64"), "cp312-manylinux_2_36_aarch64"),
    (facts(machine="AMD64"), "cp312-manylinux_2_36_x86_64"),
    (facts(python="3.11.9", libc="musl 1.2.4", machine="aarch64"), "cp311-musllinux_1_2_aarch64"),
    (facts(impl="pypy", python="3.10.14"), "pp310-manylinux_2_36_x86_64"),
])
def test_target_from_a_hosts_facts(given, expected):
    found = Target.from_facts(given)
    assert str(found) == expected
    assert Target.parse(expected) == found  # the spelling goes both ways


@pytest.mark.parametrize("given, words", [
    (facts(libc=""), ["neither glibc nor musl"]),
    (facts(libc="glibc"), ["neither glibc nor musl"]),
    (facts(impl="ironpython"), ["ironpython", "only CPython and PyPy"]),
    (facts(machine="x86 64"), ["not an architecture"]),
])
def test_a_host_we_cannot_build_for_is_named(given, words):
    with pytest.raises(TargetError) as caught:
        Target.from_facts(given, where="web1")
    assert "web1" in str(caught.value)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize("text", ["", "cp312", "py3-none-any", "cp312-manylinux2014_x86_64", "cp312-linux_x86_64"])
def test_a_misspelt_target_says_how_to_spell_one(text):
    with pytest.raises(TargetError, match="spell it like cp312-manylinux_2_36_x86_64"):
        Target.parse(text)


def glibc(version, arch):
    return Target("cp", (3, 12), "manylinux", version, arch)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize("minor", range(17, 40))
def test_every_manylinux_tag_the_hosts_glibc_accepts(arch, minor):
    tags = glibc((2, minor), arch).platforms()
    assert tags[0] == f"manylinux_2_{minor}_{arch}"  # the host's own glibc first
    assert len(tags) == len(set(tags))
    versions = [int(t.split("_")[2]) for t in tags if t.startswith("manylinux_")]
    oldest = 5 if arch == "x86_64" else 17  # no manylinux wheel for arm64 predates glibc 2.17
    assert versions == list(range(minor, oldest - 1, -1))  # newest first, none skipped
    assert f"manylinux2014_{arch}" in tags  # the legacy name of 2.17
    assert tags.index(f"manylinux2014_{arch}") == tags.index(f"manylinux_2_17_{arch}") + 1
    legacy = {"manylinux2010_x86_64", "manylinux1_x86_64"}
    assert legacy <= set(tags) if arch == "x86_64" else not legacy & set(tags)
    assert all(t.endswith(f"_{arch}") for t in tags)


def test_glibc_older_than_a_legacy_tag_does_not_get_it():
    assert "manylinux2014_x86_64" not in glibc((2, 12), "x86_64").platforms()
    assert glibc((2, 5), "x86_64").platforms() == ["manylinux_2_5_x86_64", "manylinux1_x86_64"]


def test_musl_tags():
    musl = Target("cp", (3, 11), "musllinux", (1, 2), "aarch64")
    assert musl.platforms() == ["musllinux_1_2_aarch64", "musllinux_1_1_aarch64", "musllinux_1_0_aarch64"]
    assert not [t for t in musl.platforms() if "manylinux" in t]


def test_pip_args_name_python_implementation_abis_and_every_platform():
    args = Target.parse("cp312-manylinux_2_17_x86_64").pip_args()
    assert args[:5] == ["--only-binary=:all:", "--implementation", "cp", "--python-version", "3.12"]
    pairs = list(zip(args[5::2], args[6::2]))
    assert [v for k, v in pairs if k == "--abi"] == ["cp312", "abi3", "none"]
    assert [v for k, v in pairs if k == "--platform"] == Target.parse("cp312-manylinux_2_17_x86_64").platforms()


def test_a_host_accepts_releases_for_its_python_arch_and_an_older_or_equal_libc():
    host = Target.parse("cp312-manylinux_2_36_x86_64")
    assert host.accepts(Target.parse("cp312-manylinux_2_17_x86_64"))
    assert host.accepts(host)
    assert not host.accepts(Target.parse("cp312-manylinux_2_39_x86_64"))
    assert not host.accepts(Target.parse("cp311-manylinux_2_17_x86_64"))
    assert not host.accepts(Target.parse("cp312-manylinux_2_17_aarch64"))
    assert not host.accepts(Target.parse("cp312-musllinux_1_2_x86_64"))


MARKUPSAFE = "markupsafe-3.0.4-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl"
PURE = ["flask-3.1.3-py3-none-any.whl", "pip-26.0-py3-none-any.whl", "six-1.16.0-py2.py3-none-any.whl"]


def test_what_wheels_need_of_a_host():
    host = Target.parse("cp312-manylinux_2_36_x86_64")
    assert target.wheel_needs(PURE, host) == "any"
    assert target.wheel_needs([*PURE, MARKUPSAFE], host) == "cp312-manylinux_2_17_x86_64"  # the least of its tags
    newer = "orjson-3.11.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    assert target.wheel_needs([MARKUPSAFE, newer], host) == "cp312-manylinux_2_28_x86_64"  # the most of the wheels
    abi3 = "cryptography-46.0.0-cp311-abi3-manylinux_2_34_x86_64.whl"
    assert target.wheel_needs([abi3], host) == "cp312-manylinux_2_34_x86_64"


def test_local_facts_describe_this_machine():
    here = target.local_facts()
    assert here["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert here["implementation"] == sys.implementation.name
    if sys.platform == "linux":
        assert Target.from_facts(here).python == sys.version_info[:2]
