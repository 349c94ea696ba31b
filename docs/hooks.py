"""MkDocs hook: serve the experiments' committed figures (experiments/reference/*.png) under figures/.

The results page shows the figures the experiments wrote, from the one place they are committed, so the site and
the experiments cannot disagree and no copy is kept in docs/."""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

FIGURES = Path(__file__).resolve().parent.parent / "experiments" / "reference"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for png in sorted(FIGURES.glob("*.png")):
        files.append(File.generated(config, f"figures/{png.name}", abs_src_path=str(png)))
    return files
