"""mkdocs hooks (mkdocs.yml ``hooks:``): publish the benchmarks' raw JSON with the site.

``bench/results/*.json`` lies outside ``docs/``; each file joins the site as
``benchmarks/raw/NAME.json``, so a benchmark page links to ``raw/NAME.json`` and
``mkdocs build --strict`` fails on a link to a result that does not exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def on_files(files: Files, config: Any) -> Files:
    for path in sorted(RESULTS.glob("*.json")):
        files.append(File.generated(config, f"benchmarks/raw/{path.name}", abs_src_path=str(path)))
    return files
