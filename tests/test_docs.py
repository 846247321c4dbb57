"""The generated project's documentation: a short README.md and the pages of docs/.

For each database answer, on a real bake: the README's "Documentation" index links every
docs/*.md, by its title, and only pages that exist; each page opens with its title and one
sentence; every relative link in README.md and docs/*.md points at a file of the project
and, with an #anchor, at a heading there (GitHub's anchors); no heading is left empty by an
answer's Jinja blocks; README and pages stay short enough to read without long scrolling.

Fast: real cookiecutter bakes, no venvs.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import bake

MAX_LINES = 250  # past this a page needs long scrolling: split it
INDEX = "Documentation"
FENCE = re.compile(r"^```.*?^```[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`]*`")
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6}) (.+)$", re.MULTILINE)


@pytest.fixture(scope="module", params=["sqlite", "none", "postgresql"])
def project(request, tmp_path_factory) -> Path:
    return bake(tmp_path_factory.mktemp(request.param), database=request.param)


def prose(text: str) -> str:
    """The text less code blocks and code spans, where brackets are INI sections, not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def headings(text: str) -> list[tuple[int, str]]:
    return [(len(level), title.strip()) for level, title in HEADING.findall(FENCE.sub("", text))]


def anchor(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, title in headings(text):
        slug = anchor(title)
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def pages(project: Path) -> list[Path]:
    return [project / "README.md", *sorted((project / "docs").glob("*.md"))]


def index(project: Path) -> list[tuple[str, str]]:
    """(link text, target) of each link in the README's Documentation section."""
    readme = (project / "README.md").read_text(encoding="utf-8")
    found = re.search(rf"^## {INDEX}\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL)
    assert found, f"the README has no '{INDEX}' section"
    return [(" ".join(text.split()), target) for text, target in LINK.findall(prose(found[1]))]


def title(page: Path) -> str:
    first = page.read_text(encoding="utf-8").split("\n", 1)[0]
    assert first.startswith("# "), f"{page.name} does not open with its '# ' title"
    return first[2:]


def test_the_index_links_every_docs_page_by_its_title_and_nothing_else(project):
    linked = index(project)
    assert linked, "the README's index links no page"
    missing = [target for _, target in linked if not (project / target).is_file()]
    assert missing == [], f"the index links pages that do not exist: {missing}"
    docs = sorted(str(p.relative_to(project)) for p in (project / "docs").glob("*.md"))
    assert sorted(target for _, target in linked) == docs, "every docs/*.md is linked once from the index"
    assert [(text, title(project / target)) for text, target in linked if text != title(project / target)] == []


def test_the_database_page_is_there_only_with_a_database(project):
    has_database = (project / "src" / "my_flask_app" / "models.py").is_file()
    assert (project / "docs" / "database.md").is_file() == has_database


def test_each_page_opens_with_its_title_and_one_sentence(project):
    for page in pages(project)[1:]:
        title(page)
        paragraphs = page.read_text(encoding="utf-8").split("\n\n")
        lead = " ".join(paragraphs[1].split())
        assert not lead.startswith(("#", "-", "`", "|")), f"{page.name}: no lead sentence under the title"
        assert lead.endswith(".") and ". " not in lead, f"{page.name}: the lead is not one sentence: {lead}"


def test_every_relative_link_points_at_a_file_and_heading_that_exist(project):
    broken = []
    for page in pages(project):
        for text, target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
                continue
            path, _, fragment = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.is_relative_to(project.resolve()) or not linked.is_file():
                broken.append(f"{page.name}: [{text}]({target}): no such file")
            elif fragment and fragment not in anchors(linked.read_text(encoding="utf-8")):
                broken.append(f"{page.name}: [{text}]({target}): no such heading in {linked.name}")
    assert broken == []


def test_no_heading_is_left_empty(project):
    for page in pages(project):
        text = FENCE.sub("```", page.read_text(encoding="utf-8"))
        parts = HEADING.split(text)  # [before, level, title, body, level, title, body, ...]
        for i in range(1, len(parts), 3):
            level, name, body = len(parts[i]), parts[i + 1], parts[i + 2]
            following = parts[i + 3] if i + 3 < len(parts) else None
            deeper = following is not None and len(following) > level
            assert body.strip() or deeper, f"{page.name}: '{name}' has nothing under it"


def test_readme_and_pages_stay_short(project):
    long = {p.name: n for p in pages(project) if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"over {MAX_LINES} lines: split them"
