"""A CSV file read a block at a time with pyarrow: the text of the columns wanted, rows numbered.

pyarrow splits and decodes the file (gzip through its own input stream) into columns of one
block of bytes at a time, never a Python object per field. A row it cannot split into the
header's columns (a short or a long row) is handed over as its text, to be read as the
``csv`` module would, at its place among the others.
"""

from __future__ import annotations

import csv
import logging
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from schemas.errors import CrmScorerError

__all__ = ["CsvBlock", "CsvFileError", "EmptyCsvFile", "csv_blocks", "csv_header"]

logger = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
#: Bytes of the file parsed at once: a block of Online Retail is about 12,000 rows.
BLOCK_BYTES = 1 << 20


class CsvFileError(CrmScorerError):
    """A CSV file that cannot be read: ``reason`` says why, ``row`` how many data rows were
    read before (None: not known); the caller names the file."""

    def __init__(self, reason: str, row: int | None = None) -> None:
        super().__init__(reason if row is None else f"after row {row}: {reason}")
        self.reason = reason
        self.row = row


class EmptyCsvFile(CsvFileError):
    """A CSV file without even a header line."""


@dataclass(frozen=True, slots=True)
class CsvBlock:
    """Consecutive data rows of a file: the text of each wanted column (by header name) and
    each row's number (1-based, the header not counted), and the rows that did not split into
    the header's columns, as ``(number, fields)``."""

    columns: Mapping[str, pa.StringArray]
    rows: np.ndarray
    uneven: Sequence[tuple[int, list[str]]]


def csv_header(path: Path) -> list[str]:
    """The column names of the file's header line (a byte-order mark dropped)."""
    with _arrow_stream(path) as stream:
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 16),
                parse_options=pacsv.ParseOptions(invalid_row_handler=lambda _: "skip"),
            )
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" in str(exc):
                raise EmptyCsvFile("is empty: a CSV file starts with a header line") from None
            raise CsvFileError(str(exc), 0) from None
        names: list[str] = reader.schema.names
        reader.close()
    return names


def csv_blocks(path: Path, wanted: Sequence[str]) -> Iterator[CsvBlock]:
    """The file's data rows, a block at a time, with the text of the ``wanted`` columns.

    Raises :class:`CsvFileError` for a file that is not UTF-8 (in a wanted column) or that
    pyarrow cannot parse, and ``OSError`` for one that cannot be read (a truncated gzip).
    """
    uneven: deque[tuple[int, str]] = deque()

    def keep_uneven(row: Any) -> str:
        uneven.append((row.number - 1, row.text))  # number counts the header row
        return "skip"

    columns = sorted(set(wanted))
    with _arrow_stream(path) as stream:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(invalid_row_handler=keep_uneven),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns, column_types=dict.fromkeys(columns, pa.binary())
            ),
        )
        next_row, rows_before = 1, 0
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except pa.ArrowInvalid as exc:
                    raise CsvFileError(str(exc), rows_before) from None
                rows, among = _numbered(batch.num_rows, next_row, uneven)
                texts = {name: _utf8(batch.column(name), rows_before) for name in columns}
                yield CsvBlock(texts, rows, among)
                rows_before += len(rows) + len(among)
                next_row = int(rows[-1]) + 1 if len(rows) else next_row
        finally:
            # Also when the reader stops early: its read-ahead runs on Arrow's I/O threads.
            reader.close()
        if uneven:
            yield CsvBlock(
                {name: pa.array([], pa.string()) for name in columns},
                np.zeros(0, dtype=np.int64),
                [(row, _fields(text)) for row, text in uneven],
            )


def _numbered(
    n: int, next_row: int, uneven: deque[tuple[int, str]]
) -> tuple[np.ndarray, list[tuple[int, list[str]]]]:
    """The numbers of a batch's ``n`` rows, the first numbered from ``next_row`` on and the
    uneven rows skipped, and the uneven rows among them (taken from ``uneven``)."""
    rows = np.arange(next_row, next_row + n, dtype=np.int64)
    among = []
    while uneven and n and uneven[0][0] <= rows[-1]:
        row, text = uneven.popleft()
        rows[rows >= row] += 1
        among.append((row, _fields(text)))
    return rows, among


def _fields(text: str) -> list[str]:
    """The fields of one row, as the ``csv`` module splits it."""
    return next(csv.reader([text]), [])


def _utf8(column: pa.BinaryArray, rows_before: int) -> pa.StringArray:
    """``column`` as text; :class:`CsvFileError` naming the row and the reason if a value is
    not UTF-8."""
    try:
        return column.cast(pa.string())
    except pa.ArrowInvalid:
        pass
    for offset, value in enumerate(column.to_pylist()):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CsvFileError(exc.reason, rows_before + offset) from None
    raise CsvFileError("not UTF-8", rows_before)


@contextmanager
def _arrow_stream(path: Path) -> Iterator[pa.NativeFile]:
    """``path`` as a pyarrow input stream, gunzipped when it is gzip (whatever its name)."""
    with path.open("rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    with pa.input_stream(str(path), compression="gzip" if compressed else None) as stream:
        yield stream
