"""Rendering: rows as markdown, and plots as data URIs, which the Prefect UI renders inline."""

from __future__ import annotations

import base64

import pytest

from agir_retrain.tasks.rendering import markdown_image, markdown_table, png_data_uri


def test_a_png_becomes_a_data_uri_that_decodes_to_its_bytes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(2, 2))
    axes.plot([0, 1], [1, 0])
    figure.savefig(tmp_path / "curve.png")
    plt.close(figure)
    uri = png_data_uri(tmp_path / "curve.png")
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    assert base64.b64decode(uri.removeprefix(prefix)) == (tmp_path / "curve.png").read_bytes()
    assert markdown_image("curve", tmp_path / "curve.png") == f"![curve]({uri})"


def test_a_file_that_is_not_a_png_is_refused(tmp_path):
    (tmp_path / "x.png").write_text("<svg/>")
    with pytest.raises(ValueError, match="not a PNG"):
        png_data_uri(tmp_path / "x.png")


def test_bytes_render_too_and_a_table_escapes_its_cells():
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
    assert markdown_image("loss", png) == f"![loss]({png_data_uri(png)})"
    assert markdown_table([("a|b", "1\n2")], headers=("what", "count")).splitlines() == [
        "| what | count |",
        "|---|---|",
        "| a\\|b | 1 2 |",
    ]
