"""Read AGIR run files into ``Run`` records; quarantine what cannot be read, with a reason.

``read_run_file`` never raises on bad input: a file that cannot be parsed is one
``Quarantined`` entry, a malformed copy agent is another, and the file's valid runs
are kept. This module reads the bytes, parses the JSON and hands the document to the
registered format that claims it (``formats/registry.py``); a format whose runs span
files returns pending records instead, formed into runs after every shard. See
``docs/run-format.md`` for the formats and their quirks.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import orjson

from agir_retrain.tasks.errors import RunFileError
from agir_retrain.tasks.inputs import BrokenLinkError, NotARegularFileError, read_run_bytes
from agir_retrain.tasks.records import Quarantined, QuarantineReason
from agir_retrain.tasks.runs.fields import ReadLimits, RunFileResult
from agir_retrain.tasks.runs.formats.registry import detect_format

__all__ = ["ReadLimits", "RunFileResult", "parse_json", "read_run_file"]

log = logging.getLogger(__name__)

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def read_run_file(
    source: str, data: bytes | None = None, limits: ReadLimits | None = None
) -> RunFileResult:
    """Read one run file (local path or URL) into runs; never raises on bad content.

    Args:
        source: the file's path or URL; its stem and the content name the runs
            (``<stem>#<index>@<digest>``, ``run_ids.make_run_id``).
        data: the file's bytes, when the caller already holds them.
        limits: size bounds; a file or message over them is quarantined.
    """
    limits = limits or ReadLimits()
    size = len(data) if data is not None else 0
    try:
        if data is None:
            data, size = read_run_bytes(source, limits.max_file_bytes)
            size = max(size, len(data))  # a file that grew since its stat
        if len(data) > limits.max_file_bytes:
            raise RunFileError(
                source,
                QuarantineReason.FILE_TOO_LARGE,
                f"{size} bytes > max_file_bytes={limits.max_file_bytes}",
            )
        document = parse_json(source, data)
        return detect_format(source, document).read(source, data, document, limits)
    except RunFileError as error:
        return _quarantined_file(source, size, error)
    except NotARegularFileError as error:
        return _quarantined_file(
            source, 0, RunFileError(source, QuarantineReason.NOT_A_REGULAR_FILE, str(error))
        )
    except BrokenLinkError as error:
        return _quarantined_file(
            source, 0, RunFileError(source, QuarantineReason.BROKEN_LINK, str(error))
        )
    except OSError as error:
        return _quarantined_file(
            source, 0, RunFileError(source, QuarantineReason.READ_ERROR, str(error))
        )


def _quarantined_file(source: str, size: int, error: RunFileError) -> RunFileResult:
    entry = Quarantined(source=source, run_id=None, reason=error.reason, detail=error.detail)
    return RunFileResult(
        source=source, size_bytes=size, quarantined=(entry,), file_quarantined=True
    )


def parse_json(source: str, data: bytes) -> Any:
    """Parse JSON bytes with orjson, falling back to the standard library where it must.

    orjson rejects ``NaN``/``Infinity`` and lone surrogate escapes (``"\\ud800"``),
    both of which Python's ``json.dump`` writes; those files are parsed again by
    ``json.loads``, and lone surrogates become U+FFFD.

    Raises:
        RunFileError: empty, not UTF-8, truncated or otherwise invalid JSON.
    """
    if not data.strip():
        raise RunFileError(source, QuarantineReason.EMPTY_FILE, f"{len(data)} bytes, no content")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RunFileError(
            source,
            QuarantineReason.NOT_UTF8,
            f"byte 0x{data[error.start]:02x} at offset {error.start} is not valid UTF-8",
        ) from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        end = len(text.rstrip())
        truncated = error.pos >= end or error.msg.startswith("Unterminated string")
        reason = QuarantineReason.TRUNCATED_JSON if truncated else QuarantineReason.INVALID_JSON
        raise RunFileError(
            source, reason, f"{error.msg} at line {error.lineno} column {error.colno}"
        ) from error
    except RecursionError as error:
        raise RunFileError(source, QuarantineReason.INVALID_JSON, "nested too deeply") from error
    return _replace_lone_surrogates(document)


def _replace_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {
            _replace_lone_surrogates(key): _replace_lone_surrogates(item)
            for key, item in value.items()
        }
    return value
