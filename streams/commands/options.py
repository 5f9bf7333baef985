"""The command line's shared arguments and options, each checked as typer parses it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from schemas.errors import CrmScorerError
from schemas.transactions import MAPPED_FIELDS, PRESETS, ColumnMapping, MappingError
from streams.commands.transactions import FileFormat, resolve_mapping

__all__ = [
    "FileArgument",
    "FormatOption",
    "ItemMapOption",
    "MapOption",
    "PresetOption",
    "checked_item_maps",
    "checked_rate",
    "parse_as_of",
]

logger = logging.getLogger(__name__)


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


def checked_rate(rate: str | None) -> str | None:
    from streams.commands.replay import InvalidRate, parse_rate

    try:
        parse_rate(rate)
    except InvalidRate as exc:
        raise typer.BadParameter(str(exc)) from None
    return rate


def checked_item_maps(maps: list[str] | None) -> list[str] | None:
    from streams.commands.items import item_columns

    try:
        item_columns(None, maps or ())
    except CrmScorerError as exc:
        raise typer.BadParameter(str(exc)) from None
    return maps


#: ``--items-map FIELD=Column``: the catalogue file's columns (item_id, name, category, ...).
ItemMapOption = Annotated[
    list[str] | None,
    typer.Option(
        "--items-map",
        help="Source column of a catalogue field, FIELD=Column, comma-separated or repeated "
        "(item_id, name, category, brand, price, description, available).",
        metavar="FIELD=Column",
        callback=checked_item_maps,
        show_default=False,
    ),
]


def parse_as_of(value: str) -> datetime:
    """``--as-of``: ISO-8601; a time without an offset is UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        msg = f"--as-of {value!r} is not ISO-8601 (e.g. 2011-09-09 or 2011-09-09T12:00:00+01:00)"
        raise typer.BadParameter(msg) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
