"""Customer ids as the scorer keeps them: raw, or replaced by a keyed hash (pseudonymised).

With ``CRM_PSEUDONYM_KEY`` set, the worker replaces each event's customer id by the hex
HMAC-SHA256 of the id under the key as soon as the event is decoded, so the table, its
changelog, the models, Redis keys and hashes, alerts and logs only ever hold the hash; the
lookup command applies the same function. A CRM computes it the same way to join scores
back to its customers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from streams.settings import Settings

__all__ = ["pseudonymiser"]


def pseudonymiser(settings: Settings) -> Callable[[str], str]:
    """The function from a customer id to the id the scorer keeps.

    >>> from pydantic import SecretStr
    >>> pseudonymiser(Settings())("c-42")
    'c-42'
    >>> keep = pseudonymiser(Settings(pseudonym_key=SecretStr("0123456789abcdef")))
    >>> keep("c-42")[:16], len(keep("c-42"))
    ('aec5de4fb9cfade1', 64)
    """
    if settings.pseudonym_key is None:
        return str
    key = settings.pseudonym_key.get_secret_value().encode("utf-8")

    def pseudonym(customer_id: str) -> str:
        return hmac.new(key, customer_id.encode("utf-8"), hashlib.sha256).hexdigest()

    return pseudonym
