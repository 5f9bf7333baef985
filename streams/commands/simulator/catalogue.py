"""The simulated shop: items, prices and categories, and the phrases and ratings customers write."""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from itertools import accumulate

__all__ = [
    "NEGATIVE_PHRASES",
    "NEUTRAL_PHRASES",
    "POSITIVE_PHRASES",
    "QUESTION_PHRASES",
    "Catalogue",
    "build_catalogue",
    "compose_text",
    "star_rating",
]

logger = logging.getLogger(__name__)

_CATEGORY_NAMES = (
    "electronics",
    "books",
    "home",
    "garden",
    "toys",
    "beauty",
    "sports",
    "fashion",
    "grocery",
    "pets",
    "music",
    "office",
    "kitchen",
    "health",
    "baby",
    "outdoor",
)

# Phrase pools: text = opener + detail + closer, so each mood has over a hundred combinations.
POSITIVE_PHRASES = (
    (
        "Great service",
        "Absolutely love it",
        "Excellent quality",
        "Really happy with my order",
        "Fantastic experience",
        "Wonderful shop",
        "Brilliant as always",
        "Super pleased",
    ),
    (
        "fast delivery",
        "the parcel arrived early and well packed",
        "exactly as described",
        "the support team was really helpful",
        "great value for money",
        "the quality is even better than expected",
        "checkout was quick and easy",
    ),
    (
        "love it!",
        "will buy again.",
        "highly recommend!",
        "thank you so much!",
        "five stars.",
        "best shop around!",
        "keep up the good work!",
    ),
)
NEUTRAL_PHRASES = (
    (
        "The order arrived",
        "Delivery was okay",
        "Product is as expected",
        "Average experience",
        "It does the job",
        "Nothing special",
    ),
    (
        "it took the usual number of days",
        "the packaging was standard",
        "the size is what the page says",
        "the price is about the same as elsewhere",
        "the colour is a bit different from the photo",
    ),
    ("Fine.", "No complaints.", "Might order again.", "It is okay.", "Neither good nor bad."),
)
NEGATIVE_PHRASES = (
    (
        "Terrible experience",
        "Very disappointed",
        "Awful service",
        "Really unhappy",
        "Worst purchase ever",
        "Horrible quality",
        "Extremely frustrated",
    ),
    (
        "the parcel arrived broken and nobody answers",
        "it arrived two weeks late",
        "the item stopped working after one day",
        "I was charged twice and still have no refund",
        "the product looks nothing like the pictures",
        "support ignored my three emails",
        "half of the order was missing",
    ),
    (
        "Very disappointed.",
        "I want a refund.",
        "Never ordering again.",
        "This is unacceptable.",
        "Absolutely terrible.",
        "I am furious.",
        "Worst shop ever.",
    ),
)
QUESTION_PHRASES = (
    ("Hello", "Hi", "Good morning", "Hi there", "Hello team"),
    (
        "could you tell me when my order will ship",
        "can I change the delivery address",
        "do you have this item in another size",
        "how do I update my payment details",
        "is there an invoice for my last order",
        "can I add an item to my open order",
    ),
    ("Thanks.", "Thank you.", "Regards.", "Thanks in advance.", "Cheers."),
)
_MOODS = ("positive", "neutral", "negative")


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Items with prices, categories, a companion item each and per-tier popularity."""

    item_ids: list[str]
    prices: list[float]
    categories: list[int]
    category_names: list[str]
    companions: list[int]
    by_category: list[list[int]]
    cum_weights: dict[str, list[list[float]]]
    category_cum: list[float]


def build_catalogue(seed: int, n_items: int) -> Catalogue:
    """Log-normal prices by category level, Zipf-like popularity, 1-16 categories."""
    rng = random.Random(f"{seed}:catalogue")
    n_categories = min(len(_CATEGORY_NAMES), max(1, n_items // 12))
    levels = [rng.uniform(math.log(6.0), math.log(45.0)) for _ in range(n_categories)]
    order = list(range(n_items))
    rng.shuffle(order)
    # Round-robin over a shuffled order: every category gets items.
    categories = [0] * n_items
    for position, item in enumerate(order):
        categories[item] = position % n_categories
    prices = [
        round(min(200.0, max(2.0, math.exp(rng.gauss(levels[c], 0.7)))), 2) for c in categories
    ]
    ranks = list(range(n_items))
    rng.shuffle(ranks)
    popularity = [1.0 / (rank + 1) ** 1.07 for rank in ranks]
    by_category: list[list[int]] = [[] for _ in range(n_categories)]
    for item, category in enumerate(categories):
        by_category[category].append(item)
    tiers = {
        "normal": popularity,
        "cheap": [w / p**1.5 for w, p in zip(popularity, prices, strict=True)],
        "premium": [w * p**0.8 for w, p in zip(popularity, prices, strict=True)],
    }
    cum_weights = {
        tier: [list(accumulate(weights[i] for i in members)) for members in by_category]
        for tier, weights in tiers.items()
    }
    companions = []
    for item, category in enumerate(categories):
        members = by_category[category]
        companion = rng.choice(members)
        companions.append(companion if companion != item or len(members) == 1 else members[0])
    category_cum = list(accumulate(sum(popularity[i] for i in m) for m in by_category))
    return Catalogue(
        item_ids=[f"sku-{i + 1:04d}" for i in range(n_items)],
        prices=prices,
        categories=categories,
        category_names=[_CATEGORY_NAMES[c] for c in range(n_categories)],
        companions=companions,
        by_category=by_category,
        cum_weights=cum_weights,
        category_cum=category_cum,
    )


def compose_text(rng: random.Random, pools: tuple[tuple[str, ...], ...], mood: str) -> str:
    """One sentence from a phrase pool; negative text ends its detail with a full stop."""
    opener, detail, closer = (rng.choice(pool) for pool in pools)
    if mood == "negative":
        return f"{opener}, {detail}. {closer}"
    if mood == "question":
        return f"{opener}, {detail}? {closer}"
    if mood == "positive":
        return f"{opener}, {detail}, {closer}"
    return f"{opener}; {detail}. {closer}"


def star_rating(rng: random.Random, mood: str) -> int:
    """A 1-5 star rating that agrees with the mood of the feedback text."""
    if mood == "positive":
        return 5 if rng.random() < 0.65 else 4
    if mood == "negative":
        return 1 if rng.random() < 0.6 else 2
    return 3 if rng.random() < 0.85 else 4
