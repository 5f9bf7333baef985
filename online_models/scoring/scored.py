"""What the scoring engine gives to publish: a customer's score, and a batch's scores."""

from __future__ import annotations

import logging
from typing import NamedTuple

from online_models.customer.activity import Activity
from online_models.scoring.score_types import ScoreOutcome

__all__ = ["BatchScores", "Event", "Scored"]

logger = logging.getLogger(__name__)


class Scored(NamedTuple):
    """A customer's fresh score, from their own event or from a re-score as time moved on.

    ``duplicate`` marks the score of an event applied before (delivered again): it is the
    stored state's score, changed by nothing, to be published again with no alert. From
    :meth:`ScoringEngine.process_many`, ``event`` is the index in the batch of the event a
    score is as of (None: a re-score), and ``alert_events`` that of the event each alert of
    the outcome came with.
    """

    customer_id: str
    outcome: ScoreOutcome
    duplicate: bool = False
    event: int | None = None
    alert_events: tuple[int, ...] = ()


#: One event of a batch, as :meth:`ScoringEngine.process_many` takes it: customer id,
#: activity, offset and event id (both None when unknown).
Event = tuple[str, Activity, int | None, str | None]


class BatchScores(NamedTuple):
    """What a batch of events gives to publish (:meth:`ScoringEngine.process_many`), in the
    order of :meth:`in_order`.

    ``scored``: the duplicates' stored scores first, then one score per customer the batch
    changed, as of their latest event, in order of their first event (below
    :data:`~online_models.scoring.batch_scoring.MIN_BATCH` customers, or with a churn model that has
    no array form, one per event, in order); every alert and label is in these.
    ``rescored``: the silent customers the batch's latest event time made due (one event at
    a time, each event's time: see ``rescored_after``).
    """

    scored: list[Scored]
    rescored: list[Scored]
    #: Events (their indices in the batch) of customers one of whose events raised while it
    #: was learned: the customer is left out of ``scored`` and everything else of theirs in
    #: the batch is left unlearned after that event; the caller reverts them to their stored
    #: state and scores these events one at a time, where the failing one fails alone.
    retry: tuple[int, ...] = ()
    #: For each re-score, how many of the batch's events had been scored when it was made:
    #: one event at a time, an event's re-scores follow it. Empty: after every event.
    rescored_after: tuple[int, ...] = ()

    def in_order(self) -> list[Scored]:
        """Every score in the order it was made, the order to publish them in: a customer's
        last is their newest. A re-score made before the same customer's next event of the
        batch, published after that event's score, would stand in its place in Redis.

        >>> ann, bob = Scored("ann", None, event=0), Scored("bob", None, event=1)
        >>> cy = Scored("cy", None)  # a re-score
        >>> [s.customer_id for s in BatchScores([ann, bob], [cy]).in_order()]
        ['ann', 'bob', 'cy']
        >>> [s.customer_id for s in BatchScores([ann, bob], [cy], (), (1,)).in_order()]
        ['ann', 'cy', 'bob']
        """
        if not self.rescored_after:
            return [*self.scored, *self.rescored]
        rescores = list(zip(self.rescored_after, self.rescored, strict=True))
        ordered: list[Scored] = []
        waiting = 0
        for own in self.scored:
            while own.event is not None and waiting < len(rescores):
                if rescores[waiting][0] > own.event:
                    break
                ordered.append(rescores[waiting][1])
                waiting += 1
            ordered.append(own)
        ordered += [rescore for _, rescore in rescores[waiting:]]
        return ordered
