"""Customers' features projected to a plane to be looked at (principal components)."""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["principal_components"]

logger = logging.getLogger(__name__)


def principal_components(
    x: np.ndarray, components: int = 2
) -> tuple[np.ndarray, tuple[float, ...]]:
    """The rows of ``x`` on its first ``components`` principal axes (centred, unscaled: the
    segment features share a scale), and the share of the variance each axis holds; axes the
    data lacks are zeros.

    >>> xy, explained = principal_components(np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.1]]), 1)
    >>> np.round(np.abs(xy.ravel()), 2).tolist(), round(explained[0], 3)
    ([2.0, 0.0, 2.0], 1.0)
    """
    centred = np.asarray(x, dtype=float) - np.asarray(x, dtype=float).mean(axis=0)
    if len(centred) == 0:
        return np.zeros((0, components)), (0.0,) * components
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    projected = np.zeros((len(centred), components))
    used = min(components, axes.shape[0])
    projected[:, :used] = centred @ axes[:used].T
    variance = singular**2
    total = variance.sum()
    shares = [
        float(variance[i] / total) if total > 0 and i < used else 0.0 for i in range(components)
    ]
    return projected, tuple(shares)
