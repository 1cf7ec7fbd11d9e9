"""One way to render a typed result: rows of (what, value), drawn as markdown or a terminal table.

Each result that crosses stages (the ingest and build reports, training metrics, the
evaluation) yields its rows once; the terminal tables, the Prefect markdown artifacts and
the model card all draw those same rows.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path

Row = tuple[str, str]


def markdown_table(rows: Iterable[Row], *, headers: tuple[str, str] = ("what", "value")) -> str:
    """Render rows as a two-column markdown table (pipes in cells escaped)."""
    lines = [f"| {headers[0]} | {headers[1]} |", "|---|---:|"]
    lines += [f"| {_cell(what)} | {_cell(value)} |" for what, value in rows]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def png_data_uri(png: bytes | Path) -> str:
    """A PNG as a ``data:image/png;base64,...`` URI: renders inline where ``file://`` cannot."""
    data = png.read_bytes() if isinstance(png, Path) else png
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def markdown_image(title: str, png: bytes | Path) -> str:
    """Markdown that shows a PNG inline (the rule for every plot the project publishes)."""
    return f"![{title}]({png_data_uri(png)})"
