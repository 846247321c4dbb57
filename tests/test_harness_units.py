"""The test harness's own pure logic, on sample files: fast, no root, no network.

The mirror that tests/harness/systemd.py debootstraps from is read from apt's sources, in
both of their formats. The hosts below are made up (.example): no real mirror is named.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from harness.systemd import EDGE_PACKAGES, apt_deb_uris, debian_mirror, rootfs_key

DEB822 = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def apt_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    """An /etc/apt look-alike: 'sources.list' at its top, other names in sources.list.d/."""
    root = tmp_path / "apt"
    (root / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (root / (name if name == "sources.list" else f"sources.list.d/{name}")).write_text(text)
    return root


def test_deb822_gives_the_uris_of_deb_paragraphs_in_order():
    assert apt_deb_uris("debian.sources", DEB822) == [
        "http://mirror.example/debian", "http://mirror.example/debian-security"]


def test_deb822_skips_source_only_and_disabled_paragraphs_and_reads_several_uris():
    text = ("Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
            "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n"
            "types: deb-src deb\nuris: http://one.example/debian\n  http://two.example/debian\nSuites: bookworm\n")
    assert apt_deb_uris("x.sources", text) == ["http://one.example/debian", "http://two.example/debian"]


def test_one_line_format_with_options_comments_and_deb_src():
    text = ("# deb http://commented.example/debian bookworm main\n"
            "deb-src http://src.example/debian bookworm main\n"
            "deb [ arch=amd64 signed-by=/usr/share/keyrings/k.gpg ] http://opts.example/debian bookworm main\n"
            "deb [arch=amd64] http://packed.example/debian bookworm main  # trailing comment\n"
            "deb http://plain.example/debian/ bookworm main\n"
            "\n   \nnonsense\n")
    assert apt_deb_uris("x.list", text) == [
        "http://opts.example/debian", "http://packed.example/debian", "http://plain.example/debian/"]


def test_the_first_archive_uri_wins_in_apts_order(tmp_path):
    root = apt_dir(tmp_path, {
        "sources.list": "deb http://vendor.example/apt stable main\n",  # not a /debian path
        "b.sources": DEB822.replace("mirror.example", "second.example"),
        "a.list": "deb http://first.example/debian-security bookworm-security main\n"
                  "deb http://first.example/debian/ bookworm main\n",
        "c.list.disabled": "deb http://disabled.example/debian bookworm main\n",
    })
    assert debian_mirror(root) == "http://first.example/debian"


def test_sources_list_comes_before_sources_list_d(tmp_path):
    root = apt_dir(tmp_path, {"sources.list": "deb http://top.example/debian bookworm main\n",
                              "a.sources": DEB822})
    assert debian_mirror(root) == "http://top.example/debian"


def test_deb822_alone_as_on_this_kind_of_machine(tmp_path):
    assert debian_mirror(apt_dir(tmp_path, {"debian.sources": DEB822})) == "http://mirror.example/debian"


def test_no_archive_uri_names_the_files_looked_at(tmp_path):
    root = apt_dir(tmp_path, {"security.sources": DEB822.split("\n\n")[1],
                              "vendor.list": "deb https://vendor.example/apt stable main\n"})
    with pytest.raises(RuntimeError) as refused:
        debian_mirror(root)
    message = str(refused.value)
    for looked_at in ("sources.list", "sources.list.d/security.sources", "sources.list.d/vendor.list"):
        assert str(root / looked_at) in message
    assert "CFD_DEBIAN_MIRROR" in message and "\n" not in message


def test_no_sources_at_all_still_says_where_it_looked(tmp_path):
    with pytest.raises(RuntimeError, match="no Debian mirror to debootstrap from.*sources.list"):
        debian_mirror(tmp_path / "nothing")


def test_the_rootfs_cache_is_keyed_by_its_package_list():
    assert rootfs_key("bookworm") == "bookworm"  # the base list: the key caches made before had
    edge = rootfs_key("bookworm", EDGE_PACKAGES["bookworm"])
    assert edge.startswith("bookworm-") and edge != rootfs_key("trixie", EDGE_PACKAGES["bookworm"])
    assert edge == rootfs_key("bookworm", ",".join(reversed(EDGE_PACKAGES["bookworm"].split(","))))  # order aside
    assert edge != rootfs_key("bookworm", EDGE_PACKAGES["trixie"])
