"""When each customer is next due for a re-score: a heap of deadlines, no scan of customers."""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable, Sequence

__all__ = ["Deadlines"]

logger = logging.getLogger(__name__)


class Deadlines:
    """When each customer is next due for a re-score, without scanning every customer.

    A min-heap of deadlines (floats: a heap of ``(deadline, customer)`` tuples spent most of
    its time comparing tuples) and who is due at each; a customer's later deadline supersedes
    earlier ones, so stale entries are skipped when popped. Customers due at the same moment
    come out by id.

    >>> schedule = Deadlines()
    >>> schedule.schedule("a", 10.0); schedule.schedule("b", 5.0); schedule.schedule("a", 20.0)
    >>> schedule.pop_due(15.0)
    ['b']
    >>> schedule.pop_due(25.0)
    ['a']
    """

    def __init__(self) -> None:
        self._heap: list[float] = []
        #: Who each deadline of the heap is for: one customer, or a list of those due at the
        #: same moment (some may have moved since).
        self._due_at: dict[float, str | list[str]] = {}
        self._entries = 0  # (deadline, customer) pairs held, stale ones included
        self._deadlines: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._deadlines)

    def schedule(self, customer_id: str, deadline: float) -> None:
        """Set (or move) ``customer_id``'s deadline (event time)."""
        self.schedule_many((customer_id,), (deadline,))

    def schedule_many(self, customer_ids: Sequence[str], deadlines: Sequence[float]) -> None:
        """:meth:`schedule` of many customers (a later one of the same customer wins).

        >>> schedule = Deadlines()
        >>> schedule.schedule_many(["a", "b", "a", "c"], [10.0, 5.0, 20.0, 5.0])
        >>> schedule.pop_due(15.0), schedule.pop_due(25.0)
        (['b', 'c'], ['a'])
        """
        self._deadlines.update(zip(customer_ids, deadlines, strict=True))
        heap, new = self._heap, self._hold(customer_ids, deadlines)
        # Pushing costs a few comparisons per level of the heap for each deadline, heapify
        # two per deadline of the whole heap: whichever is less.
        if len(new) * max(len(heap), 2).bit_length() > 2 * (len(heap) + len(new)):
            heap.extend(new)
            heapq.heapify(heap)
        else:
            for deadline in new:
                heapq.heappush(heap, deadline)
        # Moved deadlines stay held until popped: at most about one stale entry per live
        # one, which keeps what is held within twice the customers, O(1) amortised.
        if self._entries > 2 * len(self._deadlines) + 1024:
            self._compact()

    def _hold(self, customer_ids: Iterable[str], deadlines: Iterable[float]) -> list[float]:
        """Note who is due when; the deadlines new to the heap."""
        due_at, new, held_now = self._due_at, [], 0
        for customer_id, deadline in zip(customer_ids, deadlines, strict=True):
            held = due_at.get(deadline)
            if held is None:
                due_at[deadline] = customer_id
                new.append(deadline)
            elif isinstance(held, str):
                due_at[deadline] = [held, customer_id]
            else:
                held.append(customer_id)
            held_now += 1
        self._entries += held_now
        return new

    def cancel(self, customer_id: str) -> bool:
        """Drop ``customer_id``'s deadline; True if they had one."""
        return self._deadlines.pop(customer_id, None) is not None

    def pop_due(self, watermark: float, limit: int | None = None) -> list[str]:
        """Customers whose deadline is at or before ``watermark`` (earliest first, at most
        ``limit``), removed from the schedule."""
        due: list[str] = []
        heap, due_at, deadlines = self._heap, self._due_at, self._deadlines
        popped = 0
        while heap and heap[0] <= watermark and (limit is None or len(due) < limit):
            deadline = heapq.heappop(heap)
            held = due_at.pop(deadline)
            if type(held) is str:  # the common case: one customer due at that moment
                popped += 1
                if deadlines.get(held) == deadline:
                    del deadlines[held]
                    due.append(held)
                continue
            customers = sorted(held)
            popped += len(customers)
            for n, customer_id in enumerate(customers):
                if limit is not None and len(due) >= limit:  # the others wait, still due
                    heapq.heappush(heap, deadline)
                    self._hold(customers[n:], [deadline] * (len(customers) - n))
                    break
                if deadlines.get(customer_id) == deadline:
                    del deadlines[customer_id]
                    due.append(customer_id)
        self._entries -= popped
        return due

    def _compact(self) -> None:
        self._due_at, self._entries = {}, 0
        self._heap = self._hold(self._deadlines.keys(), self._deadlines.values())
        heapq.heapify(self._heap)
