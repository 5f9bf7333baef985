"""Customer value: an RFM score ranked against every customer seen so far."""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ValueModel", "ValueShare", "merge_value"]

logger = logging.getLogger(__name__)

# Log-spaced bins: 0, then 1 .. 10 million; a customer's rank is read from the bin counts.
_EDGES = [0.0, 1e-9, *np.geomspace(1.0, 1e7, 160).tolist()]


# Spend matters most to a CRM's notion of value; frequency and recency refine it.
_MONETARY_WEIGHT, _FREQUENCY_WEIGHT, _RECENCY_WEIGHT = 0.5, 0.3, 0.2


_BINS = len(_EDGES) + 1


@dataclass(frozen=True, slots=True)
class ValueShare:
    """The value model's shared part, or what one worker changed since its last delta: how
    many customers sit in each log bin of net spend and of order count (a delta's counts go
    up and down as its customers move between bins)."""

    monetary: np.ndarray
    frequency: np.ndarray

    @classmethod
    def zero(cls) -> ValueShare:
        """No customer."""
        return cls(np.zeros(_BINS, dtype=np.int64), np.zeros(_BINS, dtype=np.int64))

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Metadata and arrays for a model record."""
        return {"bins": _BINS}, {"monetary": self.monetary, "frequency": self.frequency}

    @classmethod
    def from_arrays(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> ValueShare:
        """The share a model record carries; ValueError if it does not fit the value model."""
        monetary, frequency = arrays["monetary"], arrays["frequency"]
        if monetary.shape != (_BINS,) or frequency.shape != (_BINS,) or monetary.dtype.kind != "i":
            msg = f"value share must hold {_BINS} integer counts per quantity"
            raise ValueError(msg)
        return cls(monetary.astype(np.int64), frequency.astype(np.int64))


def merge_value(a: ValueShare, b: ValueShare) -> ValueShare:
    """``a`` and ``b`` together: counts add, exactly."""
    return ValueShare(a.monetary + b.monetary, a.frequency + b.frequency)


class _Ranks:
    """How many customers sit in each log bin of one quantity.

    A Fenwick tree over the bins answers "how many below" in a few steps, since every
    scored event asks it.
    """

    def __init__(self) -> None:
        self._size = len(_EDGES) + 1
        self._counts = [0] * self._size
        self._tree = [0] * (self._size + 1)
        self._total = 0

    @staticmethod
    def _bin(value: float) -> int:
        return bisect.bisect_right(_EDGES, value)

    def _add(self, index: int, delta: int) -> None:
        self._counts[index] += delta
        self._total += delta
        index += 1
        while index <= self._size:
            self._tree[index] += delta
            index += index & -index

    def _below(self, index: int) -> int:
        total = 0
        while index > 0:
            total += self._tree[index]
            index -= index & -index
        return total

    def move(self, old: float | None, new: float) -> None:
        if old is not None:
            old_bin = self._bin(old)
            if self._counts[old_bin] > 0:
                self._add(old_bin, -1)
        self._add(self._bin(new), 1)

    def counts(self) -> np.ndarray:
        """Customers per bin."""
        return np.array(self._counts, dtype=np.int64)

    def reset(self, counts: np.ndarray) -> None:
        """Hold exactly ``counts``."""
        self._counts = [int(count) for count in counts]
        self._total = sum(self._counts)
        self._tree = [0] * (self._size + 1)
        for index, count in enumerate(self._counts, start=1):
            self._tree[index] += count
            parent = index + (index & -index)
            if parent <= self._size:
                self._tree[parent] += self._tree[index]

    def percentile(self, value: float) -> float:
        if self._total <= 0:
            return 0.0
        index = self._bin(value)
        # Half the ties count as below, so a lone customer sits mid-range, not at the top.
        rank = (self._below(index) + 0.5 * self._counts[index]) / self._total
        return min(max(rank, 0.0), 1.0)  # counts lost with a crashed worker can skew a bin

    def percentiles(self, values: np.ndarray) -> np.ndarray:
        """:meth:`percentile` of many values, from one cumulative sum of the counts."""
        if self._total <= 0:
            return np.zeros(len(values))
        counts = np.array(self._counts, dtype=np.int64)
        below = np.concatenate([[0], np.cumsum(counts)])
        index = np.searchsorted(_EDGES, values, side="right")
        rank = (below[index] + 0.5 * counts[index]) / self._total
        return np.clip(rank, 0.0, 1.0)

    @property
    def total(self) -> int:
        return self._total


class ValueModel:
    """RFM value in 0..1: weighted monetary rank, frequency rank and recency decay.

    Monetary and frequency are ranked against all customers seen (streaming percentile);
    recency halves every ``recency_halflife_days`` of event time since the last basket.

    >>> model = ValueModel(recency_halflife_days=30.0)
    >>> for spend in (10.0, 50.0, 100.0, 5000.0):
    ...     model.observe(None, None, spend, 3)
    >>> round(model.value(5000.0, 3, days_since_order=0.0), 3)
    0.788
    >>> model.value(10.0, 3, days_since_order=60.0) < 0.5
    True
    """

    def __init__(self, recency_halflife_days: float = 30.0) -> None:
        self.recency_halflife_days = recency_halflife_days
        self._monetary = _Ranks()
        self._frequency = _Ranks()
        self._sent = ValueShare.zero()  # the counts as of the last delta

    def delta(self) -> ValueShare:
        """How the counts moved since the last delta."""
        live = self._live()
        delta = ValueShare(
            live.monetary - self._sent.monetary, live.frequency - self._sent.frequency
        )
        self._sent = live
        return delta

    def apply(self, group: ValueShare, pending: Sequence[ValueShare] = ()) -> None:
        """Rank against the group's counts plus what the group has not merged yet of this
        model's: its ``pending`` deltas and the moves since the last one."""
        base = group
        for share in pending:
            base = merge_value(base, share)
        unsent = self.delta()
        live = merge_value(base, unsent)
        self._monetary.reset(live.monetary)
        self._frequency.reset(live.frequency)
        self._sent = ValueShare(live.monetary - unsent.monetary, live.frequency - unsent.frequency)

    def _live(self) -> ValueShare:
        return ValueShare(self._monetary.counts(), self._frequency.counts())

    @property
    def customers(self) -> int:
        """Customers ranked."""
        return self._monetary.total

    def observe(
        self, old_monetary: float | None, old_orders: int | None, monetary: float, orders: int
    ) -> None:
        """A customer's totals moved from old (None if new) to new."""
        self._monetary.move(old_monetary, monetary)
        self._frequency.move(None if old_orders is None else float(old_orders), float(orders))

    def spend_rank(self, monetary: float) -> float:
        """The share of customers ranked who spent less (half of those who spent as much).

        >>> model = ValueModel()
        >>> for spend in (10.0, 50.0, 100.0, 5000.0):
        ...     model.observe(None, None, spend, 1)
        >>> model.spend_rank(5000.0), model.spend_ranks(np.array([5000.0])).tolist()
        (0.875, [0.875])
        """
        return self._monetary.percentile(monetary)

    def spend_ranks(self, monetary: np.ndarray) -> np.ndarray:
        """:meth:`spend_rank` of many customers at once."""
        return self._monetary.percentiles(monetary)

    def value(self, monetary: float, orders: int, days_since_order: float) -> float:
        """The value score of a customer with these totals."""
        if orders == 0:
            return 0.0
        recency = math.pow(0.5, days_since_order / self.recency_halflife_days)
        m_rank = self._monetary.percentile(monetary)
        f_rank = self._frequency.percentile(float(orders))
        return _MONETARY_WEIGHT * m_rank + _FREQUENCY_WEIGHT * f_rank + _RECENCY_WEIGHT * recency

    def value_many(
        self, monetary: np.ndarray, orders: np.ndarray, days_since_order: np.ndarray
    ) -> np.ndarray:
        """:meth:`value` of many customers at once.

        >>> model = ValueModel()
        >>> model.observe(None, None, 80.0, 2)
        >>> many = model.value_many(np.array([80.0, 0.0]), np.array([2, 0]), np.array([3.0, 0.0]))
        >>> many.tolist() == [model.value(80.0, 2, 3.0), 0.0]
        True
        """
        recency = np.power(0.5, days_since_order / self.recency_halflife_days)
        m_rank = self._monetary.percentiles(monetary)
        f_rank = self._frequency.percentiles(orders.astype(float))
        value = _MONETARY_WEIGHT * m_rank + _FREQUENCY_WEIGHT * f_rank + _RECENCY_WEIGHT * recency
        return np.where(orders == 0, 0.0, value)
