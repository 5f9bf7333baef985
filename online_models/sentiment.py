"""Sentiment of feedback and ticket text by the VADER lexicon, blended with star ratings."""

from __future__ import annotations

import logging

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

__all__ = ["SentimentModel"]

logger = logging.getLogger(__name__)

# VADER is built for short social text; a ticket's first few thousand characters say enough.
MAX_TEXT_CHARS = 5_000


class SentimentModel:
    """Tone of a text in -1..1; a 1-5 rating, when given, weighs ``rating_weight``.

    >>> model = SentimentModel()
    >>> model.predict_one("Terrible service, the parcel arrived broken. Very disappointed.") < -0.5
    True
    >>> model.predict_one("Great service, love it!", rating=5) > 0.7
    True
    """

    def __init__(self, rating_weight: float = 0.5) -> None:
        self.rating_weight = rating_weight
        self._vader = SentimentIntensityAnalyzer()

    def predict_one(self, text: str | None, rating: int | None = None) -> float | None:
        """The tone, or None when there is neither text nor rating."""
        tone = None
        if text and text.strip():
            tone = float(self._vader.polarity_scores(text[:MAX_TEXT_CHARS])["compound"])
        if rating is None:
            return tone
        stars = (rating - 3) / 2.0
        if tone is None:
            return stars
        return (1.0 - self.rating_weight) * tone + self.rating_weight * stars

    def __getstate__(self) -> dict[str, float]:
        # The lexicon ships with the package; pickling it would copy 7,500 words per snapshot.
        return {"rating_weight": self.rating_weight}

    def __setstate__(self, state: dict[str, float]) -> None:
        self.__init__(**state)  # type: ignore[misc]
