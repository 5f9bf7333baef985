"""Reads a transactions file (CSV or JSON lines, gzip allowed) into events in event-time order."""

from __future__ import annotations

import csv
import gc
import gzip
import io
import logging
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from pathlib import Path
from typing import IO, Annotated, Any, NamedTuple, cast

import typer

from schemas.errors import CrmScorerError
from schemas.events import AnyEvent
from schemas.transactions import (
    MAPPED_FIELDS,
    PRESETS,
    ColumnMapping,
    MappingError,
    RowRejected,
    event_from_json_line,
    event_from_row,
)

__all__ = [
    "FileArgument",
    "FileFormat",
    "FormatOption",
    "LoadedEvent",
    "MapOption",
    "PresetOption",
    "RejectExample",
    "RejectReport",
    "TransactionFileError",
    "Transactions",
    "detect_format",
    "load_transactions",
    "opened_file",
    "require_file",
    "resolve_mapping",
]

logger = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
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

    def reject(self, row: int, rejection: RowRejected) -> None:
        """Count ``row`` as refused for ``rejection.reason``."""
        self.reasons[rejection.reason] += 1
        self.examples.setdefault(rejection.reason, RejectExample(row, rejection.message))


@dataclass(frozen=True)
class Transactions:
    """The events of a file in event-time order (ties keep file order), and what was refused."""

    events: list[LoadedEvent]
    report: RejectReport


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
    path = Path(path)
    mapping = resolve_mapping(preset, maps)
    fmt = detect_format(path, file_format)
    require_file(path)
    report = RejectReport()
    events: list[LoadedEvent] = []
    try:
        with opened_file(path, binary=fmt is FileFormat.JSONL) as handle, _no_cyclic_gc():
            if fmt is FileFormat.CSV:
                outcomes = _csv_outcomes(handle, mapping, path.name, same_names=preset is None)
            else:
                outcomes = _jsonl_outcomes(handle, mapping)
            for row, outcome in outcomes:
                report.rows += 1
                if isinstance(outcome, RowRejected):
                    report.reject(row, outcome)
                else:
                    document, event = outcome
                    events.append(LoadedEvent(event.timestamp.timestamp(), document, event, row))
    except (UnicodeDecodeError, csv.Error) as exc:
        reason = exc.reason if isinstance(exc, UnicodeDecodeError) else str(exc)
        msg = f"cannot read {path} after row {report.rows}: {reason} (expected UTF-8 {fmt})"
        raise TransactionFileError(msg) from None
    events.sort(key=attrgetter("time"))
    logger.info("Read %d rows of %s: %d events", report.rows, path, len(events))
    return Transactions(events, report)


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


def _csv_outcomes(
    handle: IO[str], mapping: ColumnMapping | None, name: str, *, same_names: bool
) -> Iterator[tuple[int, Outcome]]:
    """Each data row of a CSV file (numbered from 1 after the header), converted or refused."""
    reader = csv.reader(handle)
    header = [column.strip() for column in next(reader, [])]
    if not header:
        raise TransactionFileError(f"{name} is empty: a CSV file starts with a header line")
    mapping = _csv_mapping(mapping or ColumnMapping(), header, name, same_names=same_names)
    wanted = [(column, header.index(column)) for column in set(mapping.columns().values())]
    for number, record in enumerate(filter(None, reader), start=1):
        row = {column: record[index] for column, index in wanted if index < len(record)}
        try:
            yield number, event_from_row(row, number, mapping)
        except RowRejected as exc:
            yield number, exc


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


def _checked_preset(preset: str | None) -> str | None:
    try:
        resolve_mapping(preset)
    except MappingError as exc:
        raise typer.BadParameter(str(exc)) from None
    return preset


def _checked_maps(maps: list[str] | None) -> list[str] | None:
    for text in maps or ():
        try:
            ColumnMapping.parse(text)
        except MappingError as exc:
            raise typer.BadParameter(str(exc)) from None
    return maps


#: ``FILE``: the transactions file of replay and backtest.
FileArgument = Annotated[
    Path,
    typer.Argument(
        help="Transactions: CSV or JSON lines, gzip allowed.",
        metavar="FILE",
        show_default=False,
    ),
]
#: ``--preset NAME``: for commands that read transactions files (replay, backtest).
PresetOption = Annotated[
    str | None,
    typer.Option(
        "--preset",
        help=f"Column layout of a known source: {', '.join(sorted(PRESETS))}.",
        metavar="NAME",
        callback=_checked_preset,
        show_default=False,
    ),
]
#: ``--map FIELD=Column,...``, repeatable: pass the list to :func:`load_transactions`.
MapOption = Annotated[
    list[str] | None,
    typer.Option(
        "--map",
        help="Source column of an event field, FIELD=Column, comma-separated or repeated; "
        f"applied over --preset. Fields: {', '.join(MAPPED_FIELDS)}.",
        metavar="FIELD=Column",
        callback=_checked_maps,
        show_default=False,
    ),
]
#: ``--format csv|jsonl`` when the file's name does not say.
FormatOption = Annotated[
    FileFormat | None,
    typer.Option(
        "--format",
        help="File format when the name does not say (.csv, .jsonl, .json, .ndjson; + .gz).",
        show_default=False,
    ),
]
