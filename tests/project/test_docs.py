"""The documentation holds together: the site builds with ``mkdocs build --strict`` (every link,
page and heading anchor inside it checked), every citation of a docs page in the code names a page
and a heading anchor that exist, every raw benchmark result has its page, and the README stays a
short start."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import markdown
import pytest
from mkdocs.config import load_config

from tests.support.scripts_loader import ROOT

DOCS = ROOT / "docs"
# docs/<page>.md, optionally #<anchor>, as code and pages cite them
CITATION = re.compile(r"(?<![\w./-])docs/((?:[\w-]+/)*[\w-]+\.md)(?:#([\w-]+))?")
# Where citations live: the code, its configuration, the docs and the README.
SCANNED = ("rmserve", "training", "bench", "tests", "scripts", "k8s", "docker", "examples", "docs")
SCANNED_FILES = ("README.md", "Dockerfile", "mkdocs.yml", "pyproject.toml", ".ci/run")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".json", ".proto", ""}
README_MAX_LINES = 250


@cache
def markdown_config() -> tuple[list[object], dict[str, object]]:
    """The Markdown extensions the site is built with (mkdocs.yml), so anchors match its ids."""
    config = load_config(str(ROOT / "mkdocs.yml"))
    return config["markdown_extensions"], config["mdx_configs"]


@cache
def anchors(page: Path) -> frozenset[str]:
    """The heading ids mkdocs gives ``page`` (the toc extension's own slugify)."""
    extensions, configs = markdown_config()
    md = markdown.Markdown(extensions=extensions, extension_configs=configs)
    md.convert(page.read_text(encoding="utf-8"))

    def walk(tokens: list[dict[str, object]]) -> Iterator[str]:
        for token in tokens:
            yield str(token["id"])
            yield from walk(token["children"])  # type: ignore[arg-type]

    return frozenset(walk(md.toc_tokens))  # type: ignore[attr-defined]


def broken_citations(text: str, docs: Path = DOCS) -> list[str]:
    """The citations in ``text`` whose page or heading anchor does not exist under ``docs``."""
    broken = []
    for m in CITATION.finditer(text):
        page, anchor = docs / m.group(1), m.group(2)
        if not page.is_file():
            broken.append(f"{m.group(0)}: no page docs/{m.group(1)}")
        elif anchor and anchor not in anchors(page):
            broken.append(f"{m.group(0)}: no heading with anchor #{anchor} on docs/{m.group(1)}")
    return broken


def scanned_files() -> Iterator[Path]:
    skipped = {
        Path(__file__).resolve(),  # its broken citations are on purpose
        # --help text, which argparse wraps at hyphens inside an anchor; the same descriptions
        # are checked where they are written (rmserve/server/settings.py, ...) and in settings.md
        DOCS / "reference" / "cli.md",
    }
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts:
                yield from [path] if path not in skipped else []
    for name in SCANNED_FILES:
        yield ROOT / name


def test_strict_build(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "guides" / "serving" / "index.html").is_file()
    assert (tmp_path / "reference" / "settings" / "index.html").is_file()
    assert (tmp_path / "benchmarks" / "raw" / "soak.json").is_file()


def test_every_citation_names_a_page_and_a_heading() -> None:
    found, broken = 0, []
    for path in scanned_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        found += len(CITATION.findall(text))
        broken += [f"{path.relative_to(ROOT)}: {b}" for b in broken_citations(text)]
    assert broken == []
    assert found >= 20, "the code's citations of the docs were not found"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("see docs/guides/operations.md#memory", None),
        ("see docs/guides/operations.md", None),
        ("(docs/benchmarks/throughput.md#length-mixes-and-batch-policy).", None),
        ("see docs/guides/operations.md#memory-and-more", "no heading with anchor"),
        ("see docs/guides/operation.md#memory", "no page"),
    ],
)
def test_a_broken_citation_is_caught(text: str, problem: str | None) -> None:
    broken = broken_citations(text)
    if problem is None:
        assert broken == []
    else:
        assert len(broken) == 1 and problem in broken[0]


def test_anchors_are_the_sites_slugs() -> None:
    page = anchors(DOCS / "guides" / "serving.md")
    assert "gpu-cuda-built-not-yet-measured" in page  # punctuation dropped, spaces to hyphens
    assert "engine-workers" in page
    assert not any(a.startswith("1-") for a in anchors(DOCS / "guides" / "deployment.md"))


def test_every_raw_result_has_a_benchmark_page() -> None:
    pages = "".join(p.read_text() for p in (DOCS / "benchmarks").glob("*.md"))
    unlinked = [
        p.name for p in sorted((ROOT / "bench" / "results").glob("*.json"))
        if f"(raw/{p.name})" not in pages
    ]  # fmt: skip
    assert unlinked == []


def test_the_readme_starts_people() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    for command in ("bash scripts/demo.sh", "bash scripts/test.sh"):
        assert command in readme
