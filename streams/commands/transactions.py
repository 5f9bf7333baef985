"""Reads a transactions file (CSV or JSON lines, gzip allowed) into events in event-time order."""

from __future__ import annotations

import gc
import gzip
import io
import logging
import math
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

import numpy as np
import pyarrow as pa

from schemas.errors import CrmScorerError
from schemas.events import AnyEvent, validate_event
from schemas.transaction_columns import (
    EventColumns,
    Rejection,
    events_from_columns,
    events_from_rows,
)
from schemas.transactions import (
    MAPPED_FIELDS,
    PRESETS,
    ColumnMapping,
    MappingError,
    RowRejected,
    event_from_json_line,
)
from streams.commands.csv_blocks import CsvFileError, EmptyCsvFile, csv_blocks, csv_header

__all__ = [
    "EventChunk",
    "FileFormat",
    "LoadedEvent",
    "RejectExample",
    "RejectReport",
    "TransactionFileError",
    "TransactionStream",
    "Transactions",
    "detect_format",
    "load_transactions",
    "loaded_events",
    "opened_file",
    "read_transactions",
    "require_file",
    "resolve_mapping",
]

logger = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
#: Lines of a JSON-lines file converted at once; a CSV file goes a block of bytes at a time.
_JSON_LINES_PER_CHUNK = 10_000
#: Events per chunk of a file that is not in event-time order (sorted whole, then handed out).
_EVENTS_PER_CHUNK = 10_000
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


class FileFormat(StrEnum):
    """How a transactions file is written."""

    CSV = "csv"
    JSONL = "jsonl"


class TransactionFileError(CrmScorerError):
    """A transactions file that is missing or cannot be read as CSV or JSON lines."""


@dataclass(frozen=True, slots=True)
class LoadedEvent:
    """One event of a file: the README-format dict to produce, the validated event, its time."""

    time: float  #: event time, epoch seconds
    document: dict[str, Any]
    event: AnyEvent
    row: int  #: data row (CSV, header not counted) or line (JSON lines) it came from, 1-based


class RejectExample(NamedTuple):
    """The first row refused for a reason, and why."""

    row: int
    message: str


@dataclass
class RejectReport:
    """Rows read, and those that did not become events, by reason."""

    rows: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, RejectExample] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        """Rows that did not become events."""
        return sum(self.reasons.values())

    @property
    def accepted(self) -> int:
        """Rows that became events."""
        return self.rows - self.rejected

    def reject(self, row: int, rejection: RowRejected | Rejection) -> None:
        """Count ``row`` (and, for a :class:`Rejection` of several rows, the others after it)
        as refused for ``rejection.reason``."""
        self.reasons[rejection.reason] += rejection.count if isinstance(rejection, Rejection) else 1
        self.examples.setdefault(rejection.reason, RejectExample(row, rejection.message))


@dataclass(frozen=True)
class Transactions:
    """The events of a file in event-time order (ties keep file order), and what was refused."""

    events: list[LoadedEvent]
    report: RejectReport


#: A chunk of a file's events in event-time order: purchase and return rows as columns (CSV),
#: or the events of JSON lines as read.
EventChunk = EventColumns | list[LoadedEvent]


@dataclass(frozen=True)
class TransactionStream:
    """A file's events in event-time order, a chunk at a time: what the file holds (``events``,
    ``report``) is known before the first chunk.

    A file in event-time order (``in_file_order``) is read again a block at a time, so only a
    chunk of it is ever held; another is held whole, as columns for a CSV file, and sorted.
    """

    report: RejectReport
    events: int
    events_before: int  #: events before the time :func:`read_transactions` was given
    in_file_order: bool
    _chunks: Callable[[], Iterator[EventChunk]]

    def __iter__(self) -> Iterator[EventChunk]:
        if self.in_file_order:
            yield from self._chunks()
            return
        chunks = list(self._chunks())
        if chunks and isinstance(chunks[0], EventColumns):
            events = EventColumns.concat(cast(list[EventColumns], chunks)).in_time_order()
            for start in range(0, len(events), _EVENTS_PER_CHUNK):
                yield events.take(np.arange(start, min(start + _EVENTS_PER_CHUNK, len(events))))
            return
        loaded = sorted(
            (each for chunk in cast(list[list[LoadedEvent]], chunks) for each in chunk),
            key=attrgetter("time"),
        )
        for start in range(0, len(loaded), _EVENTS_PER_CHUNK):
            yield loaded[start : start + _EVENTS_PER_CHUNK]


def detect_format(path: Path, file_format: FileFormat | str | None = None) -> FileFormat:
    """``file_format`` if given, else the format the name says (``.gz`` looked through).

    >>> detect_format(Path("online_retail.csv.gz")), detect_format(Path("x.ndjson"))
    (<FileFormat.CSV: 'csv'>, <FileFormat.JSONL: 'jsonl'>)
    >>> detect_format(Path("x.txt"), "csv")
    <FileFormat.CSV: 'csv'>
    """
    if file_format is not None:
        return FileFormat(file_format)
    name = path.name.lower().removesuffix(".gz")
    suffix = Path(name).suffix
    if suffix not in _SUFFIXES:
        msg = (
            f"cannot tell the format of {path.name} from its name (.csv, .jsonl, .json or "
            ".ndjson, optionally .gz): pass --format csv or --format jsonl"
        )
        raise TransactionFileError(msg)
    return FileFormat(_SUFFIXES[suffix])


def resolve_mapping(preset: str | None = None, maps: Sequence[str] = ()) -> ColumnMapping | None:
    """The preset's mapping with every ``--map`` applied in order; None when neither is given.

    >>> resolve_mapping("online-retail", ["customer_id=Client"]).customer_id
    'Client'
    """
    if preset is None and not maps:
        return None
    if preset is not None and preset not in PRESETS:
        msg = f"unknown preset {preset!r}; presets: {', '.join(sorted(PRESETS))}"
        raise MappingError(msg)
    mapping = PRESETS[preset] if preset is not None else None
    for text in maps:
        mapping = ColumnMapping.parse(text, base=mapping)
    return mapping or ColumnMapping()


def load_transactions(
    path: Path | str,
    *,
    preset: str | None = None,
    maps: Sequence[str] = (),
    file_format: FileFormat | str | None = None,
) -> Transactions:
    """Every row of ``path`` converted to an event or counted as refused, sorted by event time.

    A CSV file without ``preset`` reads each field from the column of its name unless ``maps``
    names another (``customer_id``, ``timestamp``, ``item_id``, ``quantity``, ``unit_price``
    or ``amount``, ...). A JSON-lines file without ``preset`` or ``maps`` holds README-format
    events. Raises :class:`TransactionFileError` or :class:`MappingError`.
    """
    path, fmt, mapping = _checked(path, preset, maps, file_format)
    report = RejectReport()
    with _no_cyclic_gc():
        events = [
            each
            for chunk in _chunks(path, fmt, mapping, report, same_names=preset is None)
            for each in loaded_events(chunk)
        ]
    events.sort(key=attrgetter("time"))
    logger.info("Read %d rows of %s: %d events", report.rows, path, len(events))
    return Transactions(events, report)


def read_transactions(
    path: Path | str,
    *,
    preset: str | None = None,
    maps: Sequence[str] = (),
    file_format: FileFormat | str | None = None,
    before: float = math.inf,
) -> TransactionStream:
    """The events of ``path`` as :func:`load_transactions` reads them, a chunk at a time.

    The file is read once here, to count its events (and those ``before`` an event time,
    epoch seconds) and refusals and to learn whether it is in event-time order, keeping
    nothing; iterating the stream reads it again. Raises as :func:`load_transactions` does,
    before any chunk is handed out.
    """
    path, fmt, mapping = _checked(path, preset, maps, file_format)
    same_names = preset is None

    def chunks() -> Iterator[EventChunk]:
        return _chunks(path, fmt, mapping, RejectReport(), same_names=same_names)

    report = RejectReport()
    events, events_before, latest, in_order = 0, 0, -math.inf, True
    for chunk in _chunks(path, fmt, mapping, report, same_names=same_names):
        times = chunk_times(chunk)
        if len(times):
            events += len(times)
            events_before += int(np.count_nonzero(times < before))
            in_order = in_order and float(times[0]) >= latest
            latest = max(latest, float(times[-1]))
    logger.info(
        "Read %d rows of %s: %d events, in time order: %s", report.rows, path, events, in_order
    )
    return TransactionStream(report, events, events_before, in_order, chunks)


def chunk_times(chunk: EventChunk) -> np.ndarray:
    """The event times of a chunk (epoch seconds, in order)."""
    if isinstance(chunk, EventColumns):
        return chunk.times
    return np.array([each.time for each in chunk], dtype=float)


def loaded_events(chunk: EventChunk) -> list[LoadedEvent]:
    """A chunk's events, each as its README-format document and validated."""
    if not isinstance(chunk, EventColumns):
        return chunk
    return [
        LoadedEvent(time, document, validate_event(document), row)
        for time, document, row in zip(
            chunk.times.tolist(), chunk.documents(), chunk.rows.tolist(), strict=True
        )
    ]


def _checked(
    path: Path | str,
    preset: str | None,
    maps: Sequence[str],
    file_format: FileFormat | str | None,
) -> tuple[Path, FileFormat, ColumnMapping | None]:
    path = Path(path)
    mapping = resolve_mapping(preset, maps)
    fmt = detect_format(path, file_format)
    require_file(path)
    return path, fmt, mapping


def _chunks(
    path: Path,
    fmt: FileFormat,
    mapping: ColumnMapping | None,
    report: RejectReport,
    *,
    same_names: bool,
) -> Iterator[EventChunk]:
    """The file's events a chunk at a time in file order, each chunk in event-time order;
    ``report`` counts the rows and the refusals as they are read."""
    try:
        if fmt is FileFormat.CSV:
            yield from _csv_chunks(path, mapping, report, same_names=same_names)
        else:
            yield from _jsonl_chunks(path, mapping, report)
    except EmptyCsvFile as exc:
        raise TransactionFileError(f"{path.name} {exc}") from None
    except CsvFileError as exc:
        where = "" if exc.row is None else f" after row {exc.row}"
        msg = f"cannot read {path}{where}: {exc.reason} (expected UTF-8 {fmt})"
        raise TransactionFileError(msg) from None
    except (OSError, EOFError, zlib.error, pa.ArrowException) as exc:
        raise TransactionFileError(f"cannot read {path}: {exc}") from None


def _csv_chunks(
    path: Path, mapping: ColumnMapping | None, report: RejectReport, *, same_names: bool
) -> Iterator[EventColumns]:
    """Each block of a CSV file's rows, converted by column (rows pyarrow could not split
    into the header's columns one at a time, as the csv module reads them)."""
    names = csv_header(path)
    header = [name.strip() for name in names]
    mapping = _csv_mapping(mapping or ColumnMapping(), header, path.name, same_names=same_names)
    fields = mapping.columns()
    source = {f: names[header.index(column)] for f, column in fields.items()}
    positions = {column: header.index(column) for column in set(fields.values())}
    for block in csv_blocks(path, list(source.values())):
        columns = {f: block.columns[name] for f, name in source.items()}
        events, rejections = events_from_columns(columns, block.rows, mapping)
        if block.uneven:
            records = [
                (row, {c: fields_[i] for c, i in positions.items() if i < len(fields_)})
                for row, fields_ in block.uneven
            ]
            extra, refused = events_from_rows(records, mapping)
            events = EventColumns.concat([events, extra]).in_row_order()
            rejections = sorted([*rejections, *refused], key=attrgetter("row"))
        report.rows += len(block.rows) + len(block.uneven)
        for rejection in rejections:
            report.reject(rejection.row, rejection)
        yield events.in_time_order()


def _jsonl_chunks(
    path: Path, mapping: ColumnMapping | None, report: RejectReport
) -> Iterator[list[LoadedEvent]]:
    """A JSON-lines file's events, ``_JSON_LINES_PER_CHUNK`` lines at a time."""
    chunk: list[LoadedEvent] = []
    with opened_file(path, binary=True) as handle:
        for row, outcome in _jsonl_outcomes(handle, mapping):
            report.rows += 1
            if isinstance(outcome, RowRejected):
                report.reject(row, outcome)
            else:
                document, event = outcome
                chunk.append(LoadedEvent(event.timestamp.timestamp(), document, event, row))
            if report.rows % _JSON_LINES_PER_CHUNK == 0:
                yield sorted(chunk, key=attrgetter("time"))
                chunk = []
    if chunk:
        yield sorted(chunk, key=attrgetter("time"))


Outcome = tuple[dict[str, Any], AnyEvent] | RowRejected


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Cyclic garbage collection paused: it would walk every event built so far, over and over
    (a third of the load time of a 400k-row file), and nothing built here forms a cycle."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def require_file(path: Path) -> None:
    """Raise :class:`TransactionFileError` unless ``path`` is a file."""
    if not path.is_file():
        msg = f"{path} is not a file" if path.exists() else f"no such file: {path}"
        raise TransactionFileError(msg)


@contextmanager
def opened_file(path: Path, *, binary: bool) -> Iterator[IO[Any]]:
    """``path`` opened for reading, gunzipped when it is gzip; I/O errors say which file."""
    try:
        with ExitStack() as stack:
            handle: IO[Any] = stack.enter_context(path.open("rb"))
            compressed = handle.read(2) == _GZIP_MAGIC
            handle.seek(0)
            if compressed:
                handle = cast(IO[bytes], stack.enter_context(gzip.GzipFile(fileobj=handle)))
            if not binary:
                text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
                handle = stack.enter_context(text)
            yield handle
    except (OSError, EOFError, zlib.error) as exc:
        raise TransactionFileError(f"cannot read {path}: {exc}") from None


def _csv_mapping(
    mapping: ColumnMapping, header: list[str], name: str, *, same_names: bool
) -> ColumnMapping:
    """The mapping for this header; without a preset, same-name columns fill the gaps."""
    if same_names:
        mapping = mapping.with_defaults(header)
    missing = mapping.missing()
    if missing:
        msg = (
            f"{name}: no column for {', '.join(missing)}; name the columns with "
            f"--map FIELD=Column (fields: {', '.join(MAPPED_FIELDS)}) or use "
            f"--preset ({', '.join(sorted(PRESETS))}); its header: {', '.join(header)}"
        )
        raise MappingError(msg)
    absent = [f"{column} ({f})" for f, column in mapping.columns().items() if column not in header]
    if absent:
        msg = f"{name} has no column {', '.join(absent)}; its header: {', '.join(header)}"
        raise MappingError(msg)
    return mapping


def _jsonl_outcomes(
    handle: IO[bytes], mapping: ColumnMapping | None
) -> Iterator[tuple[int, Outcome]]:
    """Each non-blank line of a JSON-lines file (numbered by line), converted or refused."""
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            yield number, event_from_json_line(line, number, mapping)
        except RowRejected as exc:
            yield number, exc
