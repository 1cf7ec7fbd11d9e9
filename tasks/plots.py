"""Plots where they are shown: a PNG as a data URI, which the Prefect UI (served over http)
renders inside a markdown artifact where a ``file://`` image shows broken."""

from __future__ import annotations

import base64
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_data_uri(path: str | Path) -> str:
    """Return a PNG file as a ``data:image/png;base64,...`` URI.

    Raises:
        ValueError: the file is not a PNG.
    """
    data = Path(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{path}: not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def markdown_image(path: str | Path, alt: str | None = None) -> str:
    """A markdown image carrying the PNG inline."""
    return f"![{alt if alt is not None else Path(path).stem}]({png_data_uri(path)})"
