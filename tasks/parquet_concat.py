"""Concatenate parquet files of one schema without decoding them.

The column-chunk bytes of each part are copied as they are, and a new footer lists
every part's row groups with their offsets shifted to where the bytes now lie, as
parquet-mr's ``ParquetFileWriter.appendFile`` does. Decoding and re-encoding the
same data costs as much as writing it the first time; this costs a file copy.

The footer is Thrift compact protocol. It is parsed into a generic tree (field id,
type, value), only offsets and counts are changed, and it is written back with the
same encoding rules, so every other field survives byte for byte. Parts written
with a page index (whose entries hold absolute page offsets) or with encryption are
refused: ``ParquetSink`` writes neither.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAGIC = b"PAR1"

# Thrift compact protocol type codes.
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)

# Field ids from parquet.thrift.
_FMD_NUM_ROWS, _FMD_ROW_GROUPS, _FMD_ENCRYPTION = 3, 4, 8
_RG_COLUMNS, _RG_FILE_OFFSET, _RG_ORDINAL = 1, 5, 7
_CC_FILE_OFFSET, _CC_META, _CC_OFFSET_INDEX, _CC_COLUMN_INDEX, _CC_CRYPTO = 2, 3, 4, 6, 8
_CM_OFFSETS = frozenset({9, 10, 11, 14})  # data, index, dictionary page and bloom filter offsets

Struct = list[list[Any]]  # [[field_id, type, value], ...] in file order


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, kind: int) -> Any:
        if kind in (_TRUE, _FALSE):  # only inside lists; fields carry the bool in their type
            return self.byte() == 1
        if kind == _BYTE:
            return self.byte()
        if kind in (_I16, _I32, _I64):
            return self.zigzag()
        if kind == _DOUBLE:
            self.pos += 8
            return self.data[self.pos - 8 : self.pos]
        if kind == _BINARY:
            size = self.varint()
            self.pos += size
            return self.data[self.pos - size : self.pos]
        if kind in (_LIST, _SET):
            header = self.byte()
            size, element = header >> 4, header & 0x0F
            if size == 15:
                size = self.varint()
            return (element, [self.value(element) for _ in range(size)])
        if kind == _MAP:
            size = self.varint()
            if not size:
                return (0, 0, [])
            types = self.byte()
            key, val = types >> 4, types & 0x0F
            return (key, val, [(self.value(key), self.value(val)) for _ in range(size)])
        if kind == _STRUCT:
            return self.struct()
        raise ValueError(f"unknown thrift compact type {kind} at byte {self.pos}")

    def struct(self) -> Struct:
        fields: Struct = []
        last = 0
        while True:
            header = self.byte()
            if header == 0:
                return fields
            delta, kind = header >> 4, header & 0x0F
            field_id = last + delta if delta else self.zigzag()
            value = kind == _TRUE if kind in (_TRUE, _FALSE) else self.value(kind)
            fields.append([field_id, kind, value])
            last = field_id


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def varint(self, n: int) -> None:
        while n > 0x7F:
            self.out.append((n & 0x7F) | 0x80)
            n >>= 7
        self.out.append(n)

    def zigzag(self, n: int) -> None:
        self.varint((n << 1) ^ (n >> 63))

    def value(self, kind: int, value: Any) -> None:
        if kind in (_TRUE, _FALSE):
            self.out.append(1 if value else 2)
        elif kind == _BYTE:
            self.out.append(value)
        elif kind in (_I16, _I32, _I64):
            self.zigzag(value)
        elif kind == _DOUBLE:
            self.out += value
        elif kind == _BINARY:
            self.varint(len(value))
            self.out += value
        elif kind in (_LIST, _SET):
            element, items = value
            if len(items) < 15:
                self.out.append(len(items) << 4 | element)
            else:
                self.out.append(0xF0 | element)
                self.varint(len(items))
            for item in items:
                self.value(element, item)
        elif kind == _MAP:
            key, val, items = value
            self.varint(len(items))
            if items:
                self.out.append(key << 4 | val)
                for k, v in items:
                    self.value(key, k)
                    self.value(val, v)
        elif kind == _STRUCT:
            self.struct(value)
        else:
            raise ValueError(f"unknown thrift compact type {kind}")

    def struct(self, fields: Struct) -> None:
        last = 0
        for field_id, kind, value in fields:
            wire_kind = (_TRUE if value else _FALSE) if kind in (_TRUE, _FALSE) else kind
            delta = field_id - last
            if 0 < delta <= 15:
                self.out.append(delta << 4 | wire_kind)
            else:
                self.out.append(wire_kind)
                self.zigzag(field_id)
            if kind not in (_TRUE, _FALSE):
                self.value(kind, value)
            last = field_id
        self.out.append(0)


def _field(fields: Struct, field_id: int) -> list[Any] | None:
    return next((f for f in fields if f[0] == field_id), None)


def _read_footer(path: Path) -> tuple[Struct, int]:
    """Return a file's parsed footer and where its data ends (the footer's start)."""
    with open(path, "rb") as handle:
        handle.seek(-8, 2)
        tail = handle.read(8)
        if tail[4:] != MAGIC:
            raise ValueError(f"{path} is not a parquet file (no PAR1 at the end)")
        footer_size = struct.unpack("<I", tail[:4])[0]
        size = handle.seek(0, 2)
        footer_start = size - 8 - footer_size
        handle.seek(footer_start)
        footer = _Reader(handle.read(footer_size)).struct()
    if _field(footer, _FMD_ENCRYPTION):
        raise ValueError(f"{path}: encrypted parquet files cannot be concatenated")
    return footer, footer_start


def _shift_row_group(row_group: Struct, shift: int, ordinal: int) -> None:
    for field in row_group:
        if field[0] == _RG_FILE_OFFSET:
            field[2] += shift
        elif field[0] == _RG_ORDINAL:
            field[2] = ordinal
    for chunk in _field(row_group, _RG_COLUMNS)[2][1]:  # type: ignore[index]
        for field in chunk:
            if field[0] in (_CC_OFFSET_INDEX, _CC_COLUMN_INDEX, _CC_CRYPTO):
                raise ValueError("parts with a page index or encryption cannot be concatenated")
            if field[0] == _CC_FILE_OFFSET and field[2]:
                field[2] += shift
            elif field[0] == _CC_META:
                for meta in field[2]:
                    if meta[0] in _CM_OFFSETS and meta[2] > 0:
                        meta[2] += shift


class ParquetConcatenator:
    """Append parquet parts of one schema to a file as they come; ``close`` writes the footer.

    Parts are copied as soon as they are appended, so a caller can feed shards while
    others are still being computed.
    """

    def __init__(self, target: Path) -> None:
        self.target = Path(target)
        self.rows = 0
        self._out = open(self.target, "wb")  # closed by close() or abort()
        self._out.write(MAGIC)
        self._first: Struct | None = None
        self._first_part: Path | None = None
        self._row_groups: list[Struct] = []

    def append(self, part: Path) -> None:
        """Copy one part's column chunks and keep its row groups, offsets shifted.

        Raises:
            ValueError: the part is not parquet, or its schema differs from the first's.
        """
        footer, data_end = _read_footer(Path(part))
        if self._first is None:
            self._first, self._first_part = footer, Path(part)
        elif _field(footer, 2) != _field(self._first, 2):
            raise ValueError(f"{part}: schema differs from {self._first_part}'s")
        shift = self._out.tell() - len(MAGIC)
        _copy_range(Path(part), len(MAGIC), data_end, self._out)
        for row_group in _field(footer, _FMD_ROW_GROUPS)[2][1]:  # type: ignore[index]
            _shift_row_group(row_group, shift, len(self._row_groups))
            self._row_groups.append(row_group)
        self.rows += _field(footer, _FMD_NUM_ROWS)[2]  # type: ignore[index]

    def abort(self) -> None:
        """Close the file without a footer (the caller discards it)."""
        self._out.close()

    def close(self) -> int:
        """Write the merged footer and close the file; return the rows written."""
        if self._first is None:
            self._out.close()
            raise ValueError("nothing to concatenate")
        merged = [list(field) for field in self._first]
        for field in merged:
            if field[0] == _FMD_NUM_ROWS:
                field[2] = self.rows
            elif field[0] == _FMD_ROW_GROUPS:
                field[2] = (_STRUCT, self._row_groups)
        writer = _Writer()
        writer.struct(merged)
        self._out.write(writer.out)
        self._out.write(struct.pack("<I", len(writer.out)))
        self._out.write(MAGIC)
        self._out.close()
        return self.rows


def concat_parquet(parts: Sequence[Path], target: Path) -> int:
    """Write the parts' rows, in order, to ``target`` as one parquet file; return rows.

    Raises:
        ValueError: no parts, a part is not parquet, or the parts' schemas differ.
    """
    concatenator = ParquetConcatenator(target)
    try:
        for part in parts:
            concatenator.append(Path(part))
    except BaseException:
        concatenator.abort()
        raise
    return concatenator.close()


def _copy_range(path: Path, start: int, end: int, out: Any, chunk_bytes: int = 1 << 22) -> None:
    """Append bytes ``[start, end)`` of a file to an open file."""
    with open(path, "rb") as source:
        source.seek(start)
        remaining = end - start
        while remaining:
            chunk = source.read(min(remaining, chunk_bytes))
            if not chunk:
                raise ValueError(f"{path} ended {remaining} bytes early")
            out.write(chunk)
            remaining -= len(chunk)
