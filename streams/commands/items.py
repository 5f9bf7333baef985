"""Reads a catalogue file (CSV or JSON lines, gzip allowed) and sends it to CRM_ITEMS_TOPIC."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson
from kafka.errors import KafkaError

from schemas.errors import EventRejected
from schemas.item_rows import ITEM_PRESETS, ItemColumns, item_from_document, renames_of, rows_from
from schemas.items import CatalogueItem, item_key
from schemas.transactions import MappingError
from streams.commands.producer import EventProducer, check_acknowledged
from streams.commands.transactions import (
    FileFormat,
    TransactionFileError,
    detect_format,
    opened_file,
    require_file,
)
from streams.settings import Settings
from streams.topics import BrokerUnavailable

__all__ = ["Catalogue", "item_columns", "load_catalogue", "send_catalogue"]

logger = logging.getLogger(__name__)


@dataclass
class Catalogue:
    """The items of a catalogue file, and what was left out, by reason (with an example)."""

    items: list[CatalogueItem]
    rejected: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def available(self) -> int:
        return sum(item.available for item in self.items)


def item_columns(preset: str | None = None, maps: list[str] | tuple[str, ...] = ()) -> ItemColumns:
    """The preset's columns with every ``--map`` applied in order; names a bad part."""
    if preset is not None and preset not in ITEM_PRESETS:
        msg = f"unknown catalogue preset {preset!r}; presets: {', '.join(sorted(ITEM_PRESETS))}"
        raise MappingError(msg)
    mapping = ITEM_PRESETS[preset] if preset is not None else ItemColumns()
    for text in maps:
        mapping = ItemColumns.parse(text, mapping)
    return mapping


def load_catalogue(
    path: Path | str,
    *,
    preset: str | None = None,
    maps: list[str] | tuple[str, ...] = (),
    file_format: FileFormat | str | None = None,
) -> Catalogue:
    """Every item of ``path``: a CSV file's rows gathered per item id (most common text,
    median price: a transactions file such as Online Retail reads as its catalogue), or JSON
    lines in the topic's format (the last line of an item wins). Raises
    :class:`TransactionFileError` or :class:`MappingError`.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "items.csv")
    >>> _ = open(path, "w").write("sku,title,price\\nA1,Red lamp,20\\nA1,Red lamp,22\\n,x,1\\n")
    >>> catalogue = load_catalogue(path, maps=["item_id=sku,name=title"])
    >>> [(i.item_id, i.name, i.price) for i in catalogue.items], dict(catalogue.rejected)
    ([('A1', 'Red lamp', 21.0)], {'no_item_id': 1})
    """
    path = Path(path)
    mapping = item_columns(preset, maps)
    fmt = detect_format(path, file_format)
    require_file(path)
    try:
        with opened_file(path, binary=fmt is FileFormat.JSONL) as handle:
            if fmt is FileFormat.CSV:
                reader = csv.DictReader(handle)
                header = [column.strip() for column in reader.fieldnames or ()]
                wanted = mapping.columns()
                for name in ("item_id", "name"):
                    if wanted[name] not in header:
                        msg = (
                            f"{path.name} has no column {wanted[name]!r} ({name}); name it with "
                            f"--map {name}=Column or --preset; its header: {', '.join(header)}"
                        )
                        raise MappingError(msg)
                rows = rows_from(reader, mapping)
                return Catalogue(rows.items(), rows.rejected, rows.examples)
            return _json_lines(handle, mapping)
    except (UnicodeDecodeError, csv.Error) as exc:
        msg = f"cannot read {path}: {exc} (expected UTF-8 {fmt})"
        raise TransactionFileError(msg) from None


def _json_lines(handle: IO[bytes], mapping: ItemColumns) -> Catalogue:
    renames = renames_of(mapping)
    items: dict[str, CatalogueItem] = {}
    catalogue = Catalogue([])
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            document = orjson.loads(line)
            if not isinstance(document, dict):
                raise EventRejected("not_an_object", "a line must be a JSON object")
            item = item_from_document(document, renames)
        except orjson.JSONDecodeError as exc:
            catalogue.rejected["not_json"] += 1
            catalogue.examples.setdefault("not_json", f"line {number}: {exc}")
            continue
        except EventRejected as exc:
            catalogue.rejected[exc.reason] += 1
            catalogue.examples.setdefault(exc.reason, f"line {number}: {exc.message}")
            continue
        items.pop(item.item_id, None)
        items[item.item_id] = item
    catalogue.items = list(items.values())
    return catalogue


def send_catalogue(settings: Settings, items: list[CatalogueItem], *, wait: float = 30.0) -> int:
    """Send ``items`` to ``CRM_ITEMS_TOPIC`` keyed by item id; returns how many the broker
    acknowledged. Raises :class:`BrokerUnavailable` when it does not acknowledge them all."""
    failures: list[BaseException] = []
    try:
        with EventProducer(settings, timeout=wait) as producer:
            for item in items:
                future = producer.send_to(settings.items_topic, item_key(item.item_id),
                                          item.to_bytes())  # fmt: skip
                future.add_errback(failures.append)
            producer.flush()
    except KafkaError as exc:
        msg = f"sending to CRM_BROKER={settings.broker} failed: {exc}"
        raise BrokerUnavailable(msg) from exc
    check_acknowledged(settings, failures, len(items), "catalogue items")
    return len(items)
