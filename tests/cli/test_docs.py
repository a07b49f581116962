"""Docs that must not drift from the code: the troubleshooting index quotes messages
keyferry really emits, the README links every page, every `page.md#anchor` link names a
heading of that page, and every test a page links to (the threat model's evidence) exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests import REPO

DOCS = REPO / "docs"


def emitted_text() -> list[str]:
    """Every string literal in provider/ (f-strings with their placeholders as NUL),
    implicit concatenations already joined by the parser."""
    out = []
    for path in (REPO / "provider").rglob("*.py"):
        if "_proto" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.append(node.value)
            elif isinstance(node, ast.JoinedStr):
                # an f-string's Constant parts are str (ast types them as any constant)
                out.append(
                    "".join(
                        str(v.value) if isinstance(v, ast.Constant) else "\0" for v in node.values
                    )
                )
    return out


def headings() -> list[str]:
    text = (DOCS / "troubleshooting.md").read_text()
    return [line[4:] for line in text.splitlines() if line.startswith("### ")]


def test_every_troubleshooting_entry_quotes_a_message_keyferry_emits() -> None:
    corpus = emitted_text()
    entries = headings()
    assert len(entries) >= 30
    for heading in entries:
        fragments = re.findall(r"`([^`]+)`", heading)
        assert fragments, f"heading without a quoted message: {heading!r}"
        # `a` … `b`: both in one message, in that order (placeholders between them).
        pattern = ".*?".join(re.escape(f) for f in fragments)
        assert any(re.search(pattern, text, flags=re.S) for text in corpus), (
            f"docs/troubleshooting.md quotes {heading!r}, which keyferry no longer emits"
        )


def test_readme_links_every_doc_page() -> None:
    readme = (REPO / "README.md").read_text()
    for page in sorted(DOCS.glob("*.md")):
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
    for link in re.findall(r"\]\(((?:docs|deploy|examples)/[^)#]*)", readme):
        assert (REPO / link).exists(), link


def test_doc_links_point_at_files_that_exist() -> None:
    for page in DOCS.glob("*.md"):
        for link in re.findall(r"\]\((?!https?:)([^)#]+)", page.read_text()):
            assert (page.parent / link).resolve().exists(), f"{page.name}: {link}"


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation dropped,
    spaces as '-', a repeated heading suffixed '-1', '-2'... (fenced code skipped)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading = re.match(r"#{1,6} (.*)", line)
        if fenced or not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_doc_anchors_name_headings_that_exist() -> None:
    pages = [
        *DOCS.glob("*.md"),
        *(REPO / n for n in ("README.md", "CHANGELOG.md", "CONTRIBUTING.md")),
    ]
    checked = 0
    for page in pages:
        for target, anchor in re.findall(
            r"\]\((?!https?:)([^)#\s]*)#([^)\s]+)\)", page.read_text()
        ):
            path = (page.parent / target).resolve() if target else page
            if path.suffix != ".md":
                continue
            assert anchor in heading_anchors(path), f"{page.name}: {target}#{anchor}"
            checked += 1
    assert checked >= 100


def test_every_test_a_page_links_to_exists() -> None:
    linked = 0
    for page in DOCS.glob("*.md"):
        for name, link in re.findall(
            r"\[`(test_\w+)`\]\((\.\./tests/[^)#]+\.py)\)", page.read_text()
        ):
            path = (page.parent / link).resolve()
            tree = ast.parse(path.read_text(encoding="utf-8"))
            defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            assert name in defined, f"{page.name} links {name}, which {link} does not define"
            linked += 1
    assert linked >= 50  # docs/security.md alone names more
