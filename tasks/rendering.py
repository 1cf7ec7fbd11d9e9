"""One way to render a typed result: rows of (what, value), drawn as markdown or a terminal table.

Each result that crosses stages (the ingest and build reports, training metrics, the
evaluation) yields its rows once; the terminal tables, the Prefect markdown artifacts and
the model card all draw those same rows. Plots travel inline, as ``data:`` URIs: the
Prefect UI is served over http and shows a ``file://`` image as broken.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from pathlib import Path

Row = tuple[str, str]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def markdown_table(
    rows: Iterable[Sequence[str]], *, headers: Sequence[str] = ("what", "value")
) -> str:
    """Render rows as a markdown table, one cell per header (pipes in cells escaped)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def png_data_uri(png: bytes | str | Path) -> str:
    """Return a PNG (its bytes, or a file) as a ``data:image/png;base64,...`` URI.

    Raises:
        ValueError: the bytes are not a PNG.
    """
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        where = "bytes given" if isinstance(png, bytes) else str(png)
        raise ValueError(f"{where}: not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def markdown_image(alt: str, png: bytes | str | Path) -> str:
    """Markdown that shows a PNG inline (the rule for every plot the project publishes)."""
    return f"![{alt}]({png_data_uri(png)})"
