"""The purchases and refunds of a file's events, gathered as the backtest reads them: the
outcomes its scores are judged on."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from online_models.evaluation.history import Purchase, PurchaseHistory
from schemas.events import PurchaseEvent, ReturnEvent
from schemas.transaction_columns import EventColumns
from streams.commands.transactions import EventChunk, LoadedEvent

__all__ = ["PurchaseRecorder", "history_of", "purchases_of"]

logger = logging.getLogger(__name__)


def purchases_of(chunk: EventChunk) -> list[Purchase]:
    """The purchases and refunds of a chunk of a file's events (other events left out)."""
    if isinstance(chunk, EventColumns):
        return list(
            zip(
                chunk.customer_ids, chunk.times.tolist(), chunk.item_ids,
                chunk.amounts.tolist(), chunk.returns.tolist(), strict=True,
            )
        )  # fmt: skip
    found: list[Purchase] = []
    for loaded in chunk:
        event = loaded.event
        if isinstance(event, PurchaseEvent | ReturnEvent):
            refund = isinstance(event, ReturnEvent)
            found.append((event.customer_id, loaded.time, event.item_id, event.amount, refund))
    return found


def history_of(events: list[LoadedEvent]) -> PurchaseHistory:
    """The purchase history of a file's loaded events."""
    return PurchaseHistory(purchases_of(events))


class PurchaseRecorder:
    """Passes a file's chunks on to the backtest, adding their purchases and refunds (before
    and after the cutoff) to :meth:`history` a chunk at a time."""

    def __init__(self) -> None:
        self._history = PurchaseHistory()

    def watch(self, chunks: Iterable[EventChunk]) -> Iterator[EventChunk]:
        for chunk in chunks:
            self._history.add(purchases_of(chunk))
            yield chunk

    def history(self) -> PurchaseHistory:
        return self._history
