"""Model checkpoints: what the models learned, as versioned bytes, and back into a scorer.

A checkpoint is one JSON header line, then a pickle of the learned models. The header is read
and checked before a byte of the pickle is: a checkpoint of another format, of models shaped
by other settings, or whose bytes do not match their digest (or their HMAC, when a key is
given) is refused whole, never half-loaded.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import pickle
import random
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from online_models import __version__
from online_models.scorer import CustomerScorer, ScorerConfig
from schemas.errors import CrmScorerError

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "CheckpointError",
    "dump_checkpoint",
    "load_checkpoint",
]

logger = logging.getLogger(__name__)

#: Bumped whenever the pickled models change shape; other formats are refused.
CHECKPOINT_FORMAT = 1
_MAGIC = "crm-scorer-models"
# Settings that shape the models' parameters: a checkpoint made under other values cannot be
# continued from (a 6-centre segmenter is no 8-centre one).
_SHAPING = {
    "segments": "CRM_SEGMENTS",
    "recommender_factors": "CRM_RECOMMENDER_FACTORS",
    "churn_model": "CRM_CHURN_MODEL",
}
# What a checkpoint may name. River and crm-scorer classes, and an exact list of anything
# else the pickled models need; never a function that could run code, nor a dotted name
# (pickle resolves "random._os.system"). This stops the known pickle exploits, not a
# determined forger: the HMAC key proves a checkpoint was written by a worker holding it.
_CLASS_PACKAGES = frozenset({"river", "online_models"})
_ALLOWED = frozenset(
    {
        ("builtins", "float"),
        ("builtins", "int"),
        ("builtins", "complex"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
        ("collections", "Counter"),
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("collections", "deque"),
        ("functools", "partial"),
        ("random", "Random"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random._mt19937", "MT19937"),
        ("numpy.random._pcg64", "PCG64"),
        ("online_models.checkpoint", "_bound_method"),
    }
)
# Methods a pickled model holds on to (River's initialisers keep ``Random.gauss``).
_BOUND_METHODS = frozenset({"gauss", "random", "uniform", "normal", "standard_normal"})


class CheckpointError(CrmScorerError):
    """A checkpoint that cannot be restored; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint's header and the models it holds.

    ``positions`` maps a shard (Kafka partition) to the position (offset) of the latest event
    whose learning the models include.
    """

    format: int
    scorer_version: str
    created_at: float
    events_learned: int
    positions: dict[int, int]
    config: dict[str, Any]
    models: dict[str, Any] = field(repr=False)

    def restore_into(self, scorer: CustomerScorer) -> None:
        """Make ``scorer``'s models this checkpoint's; refuses models shaped by other settings."""
        current = _config_dict(scorer.config)
        for name, variable in _SHAPING.items():
            if self.config.get(name) != current[name]:
                msg = (
                    f"the checkpoint's models were made with {variable}={self.config.get(name)}, "
                    f"not {current[name]}"
                )
                raise CheckpointError(msg)
        scorer.restore_models(self.models)


def dump_checkpoint(
    scorer: CustomerScorer,
    positions: Mapping[int, int],
    *,
    created_at: float,
    key: bytes | None = None,
) -> bytes:
    """The scorer's learned models as checkpoint bytes (signed with ``key`` when given).

    >>> scorer = CustomerScorer()
    >>> raw = dump_checkpoint(scorer, {0: 41}, created_at=1.7e9)
    >>> restored = load_checkpoint(raw)
    >>> restored.positions, restored.events_learned
    ({0: 41}, 0)
    """
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(scorer.snapshot_models())
    payload = buffer.getvalue()
    header = {
        "magic": _MAGIC,
        "format": CHECKPOINT_FORMAT,
        "scorer_version": __version__,
        "created_at": created_at,
        "events_learned": scorer.model_version_events,
        "positions": {str(shard): offset for shard, offset in sorted(positions.items())},
        "config": _config_dict(scorer.config),
        "payload_bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "hmac_sha256": None if key is None else _sign(key, payload),
    }
    return orjson.dumps(header) + b"\n" + payload


def load_checkpoint(raw: bytes, *, key: bytes | None = None) -> Checkpoint:
    """Read checkpoint bytes; raises :class:`CheckpointError` for anything not restorable.

    With ``key``, the checkpoint must carry a matching HMAC: one written without the key, or
    by someone without it, is refused before it is unpickled.
    """
    header = _header(raw)
    payload = raw[raw.index(b"\n") + 1 :]
    if len(payload) != header.get("payload_bytes"):
        msg = f"checkpoint is truncated: {len(payload)} of {header.get('payload_bytes')} bytes"
        raise CheckpointError(msg)
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        msg = "checkpoint is corrupt: its bytes do not match their sha256"
        raise CheckpointError(msg)
    if key is not None:
        signature = header.get("hmac_sha256")
        expected = _sign(key, payload)
        if not isinstance(signature, str) or not hmac.compare_digest(signature, expected):
            msg = "checkpoint is not signed with CRM_CHECKPOINT_KEY: refusing to unpickle it"
            raise CheckpointError(msg)
    try:
        models = _RestrictedUnpickler(io.BytesIO(payload)).load()
    except CheckpointError:
        raise
    except Exception as exc:
        msg = f"checkpoint models cannot be read: {type(exc).__name__}: {exc}"
        raise CheckpointError(msg) from exc
    if not isinstance(models, dict):
        msg = "checkpoint does not hold a dict of models"
        raise CheckpointError(msg)
    return Checkpoint(
        format=header["format"],
        scorer_version=str(header.get("scorer_version")),
        created_at=float(header.get("created_at", 0.0)),
        events_learned=int(header.get("events_learned", 0)),
        positions={int(shard): int(offset) for shard, offset in header["positions"].items()},
        config=dict(header.get("config") or {}),
        models=models,
    )


def _header(raw: bytes) -> dict[str, Any]:
    end = raw.find(b"\n")
    try:
        header = orjson.loads(raw[:end]) if end > 0 else None
    except orjson.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("magic") != _MAGIC:
        msg = "not a crm-scorer model checkpoint"
        raise CheckpointError(msg)
    if header.get("format") != CHECKPOINT_FORMAT:
        msg = (
            f"checkpoint of format {header.get('format')!r} (written by crm-scorer "
            f"{header.get('scorer_version')}); this crm-scorer {__version__} reads format "
            f"{CHECKPOINT_FORMAT} only"
        )
        raise CheckpointError(msg)
    if not isinstance(header.get("positions"), dict):
        msg = "checkpoint header has no positions"
        raise CheckpointError(msg)
    return header


def _sign(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def _config_dict(config: ScorerConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in _SHAPING}


def _bound_method(owner: Any, name: str) -> Any:
    """``owner.name`` for the few random-number methods models keep (see ``_Pickler``)."""
    if name not in _BOUND_METHODS or not isinstance(owner, random.Random | np.random.Generator):
        msg = f"checkpoint names the method {type(owner).__name__}.{name}, which no model uses"
        raise CheckpointError(msg)
    return getattr(owner, name)


class _Pickler(pickle.Pickler):
    """Pickles bound methods as :func:`_bound_method` instead of ``builtins.getattr``."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.MethodType | types.BuiltinMethodType) and not isinstance(
            obj.__self__, types.ModuleType
        ):
            return _bound_method, (obj.__self__, obj.__name__)
        return NotImplemented


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if "." not in name and (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if "." not in name and module.split(".")[0] in _CLASS_PACKAGES:
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        msg = f"checkpoint names {module}.{name}, which no crm-scorer model uses"
        raise CheckpointError(msg)
