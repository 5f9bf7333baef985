"""Catalogue files turned into catalogue items: column mappings, presets, rows per item."""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from schemas.errors import EventRejected
from schemas.events import validation_rejection
from schemas.items import CatalogueItem
from schemas.transactions import PRESETS as TRANSACTION_PRESETS
from schemas.transactions import MappingError

__all__ = ["ITEM_FIELDS", "ITEM_PRESETS", "ItemColumns", "ItemRows", "item_from_document"]

logger = logging.getLogger(__name__)

#: The catalogue fields a source column can give, in the order ``--map`` help lists them.
ITEM_FIELDS = ("item_id", "name", "category", "brand", "price", "description", "available")
_TRUE = frozenset({"true", "1", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "f"})


@dataclass(frozen=True)
class ItemColumns:
    """Which source column gives each catalogue field (None: the column of the field's name).

    ``non_products`` are item ids that are not goods (postage, fees): left out.

    >>> ItemColumns.parse("name=Title,price=Cost").columns()["name"]
    'Title'
    """

    item_id: str | None = None
    name: str | None = None
    category: str | None = None
    brand: str | None = None
    price: str | None = None
    description: str | None = None
    available: str | None = None
    non_products: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, text: str, base: ItemColumns | None = None) -> ItemColumns:
        """``FIELD=Column`` pairs, comma-separated, over ``base``; names the bad part."""
        changes: dict[str, Any] = {}
        for pair in filter(None, (part.strip() for part in text.split(","))):
            name, sep, column = (piece.strip() for piece in pair.partition("="))
            if not sep or not column:
                msg = f"--map {pair!r}: expected FIELD=Column"
                raise MappingError(msg)
            if name not in ITEM_FIELDS:
                msg = f"--map {pair!r}: unknown field {name!r}; fields: {', '.join(ITEM_FIELDS)}"
                raise MappingError(msg)
            changes[name] = column
        return replace(base or cls(), **changes)

    def columns(self) -> dict[str, str]:
        """Each field's source column."""
        return {name: getattr(self, name) or name for name in ITEM_FIELDS}


#: ``online-retail``: the UCI Online Retail file, one line per invoice item: an item's name
#: is its most common ``Description``, its price the median ``UnitPrice`` of its lines.
ITEM_PRESETS: Mapping[str, ItemColumns] = MappingProxyType(
    {
        "online-retail": ItemColumns(
            item_id="StockCode",
            name="Description",
            price="UnitPrice",
            non_products=TRANSACTION_PRESETS["online-retail"].non_products,
        )
    }
)


@dataclass
class ItemRows:
    """A catalogue file's rows gathered per item: several rows of one item (a transactions
    file read as a catalogue) give its most common text and median price.

    >>> rows = ItemRows(ItemColumns())
    >>> rows.add({"item_id": "a", "name": "Lamp", "price": "2.5"})
    >>> rows.add({"item_id": "a", "name": "Lamp", "price": "3.5"})
    >>> rows.add({"item_id": "", "name": "x"})
    >>> items = rows.items()
    >>> [(i.item_id, i.name, i.price) for i in items], dict(rows.rejected)
    ([('a', 'Lamp', 3.0)], {'no_item_id': 1})
    """

    mapping: ItemColumns
    rejected: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    _texts: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)
    _prices: dict[str, list[float]] = field(default_factory=dict)
    _available: dict[str, bool] = field(default_factory=dict)

    def add(self, row: Mapping[str, Any]) -> None:
        """Take one CSV row (column -> text)."""
        columns = self.mapping.columns()
        item_id = str(row.get(columns["item_id"]) or "").strip()
        if not item_id:
            self._reject("no_item_id", f"no {columns['item_id']!r}")
            return
        if item_id in self.mapping.non_products:
            self._reject("not_a_product", f"item {item_id!r} is not a product")
            return
        texts = self._texts.setdefault(item_id, {})
        for name in ("name", "category", "brand", "description"):
            value = str(row.get(columns[name]) or "").strip()
            if value:
                texts.setdefault(name, Counter())[value] += 1
        price = _number(row.get(columns["price"]))
        if price is not None and price > 0:
            self._prices.setdefault(item_id, []).append(price)
        available = str(row.get(columns["available"]) or "").strip().lower()
        if available in _TRUE or available in _FALSE:
            self._available[item_id] = available in _TRUE

    def items(self) -> list[CatalogueItem]:
        """Every item with a name, in the order first seen; the others counted as rejected."""
        out = []
        for item_id, texts in self._texts.items():
            document: dict[str, Any] = {"item_id": item_id}
            for name, counts in texts.items():
                document[name] = counts.most_common(1)[0][0]
            prices = self._prices.get(item_id)
            if prices:
                document["price"] = round(statistics.median(prices), 2)
            if item_id in self._available:
                document["available"] = self._available[item_id]
            try:
                out.append(item_from_document(document))
            except EventRejected as exc:
                self._reject(exc.reason, f"item {item_id!r}: {exc.message}")
        return out

    def _reject(self, reason: str, message: str) -> None:
        self.rejected[reason] += 1
        self.examples.setdefault(reason, message)


def item_from_document(
    document: Mapping[str, Any], renames: Sequence[tuple[str, str]] = ()
) -> CatalogueItem:
    """A catalogue item from a JSON document in the topic's format, with ``renames``
    (field, source name) applied first; raises :class:`EventRejected` naming the field."""
    renamed = dict(document)
    for name, column in renames:
        if column != name and column in renamed:
            renamed[name] = renamed.pop(column)
    try:
        return CatalogueItem.model_validate(renamed)
    except ValidationError as exc:
        raise validation_rejection(exc) from None


def renames_of(mapping: ItemColumns) -> list[tuple[str, str]]:
    """The (field, source name) pairs a JSON-lines catalogue is read with."""
    return [(name, column) for name, column in mapping.columns().items() if column != name]


def rows_from(lines: Iterable[Mapping[str, Any]], mapping: ItemColumns) -> ItemRows:
    """Gather CSV rows into an :class:`ItemRows`."""
    gathered = ItemRows(mapping)
    for row in lines:
        gathered.add(row)
    return gathered


def _number(value: Any) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None
