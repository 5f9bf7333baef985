"""The Faust customer table seen as customer states: compact records in, states out."""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

from online_models.state import CustomerState

__all__ = ["TableStates"]

logger = logging.getLogger(__name__)


class TableStates(MutableMapping[str, CustomerState]):
    """The Faust customer table seen as customer states: compact records in, states out.

    Every read decodes a fresh state, so a state handed out is never changed by later events.
    """

    def __init__(self, table: Any) -> None:
        self._table = table

    def __getitem__(self, customer_id: str) -> CustomerState:
        raw = self._table.get(customer_id)
        if raw is None:
            raise KeyError(customer_id)
        return CustomerState.decode(raw)

    def __setitem__(self, customer_id: str, state: CustomerState) -> None:
        self._table[customer_id] = state.encode()

    def __delitem__(self, customer_id: str) -> None:
        del self._table[customer_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table.keys())

    def __len__(self) -> int:
        return len(self._table)
