"""Segments: k-means (``kmeans``, its share ``centres``, ``names``), density (``density``,
``micro_clusters``, ``density_share``, ``regions``), and the ``outliers`` and ``spread``
both measure distances with."""

from online_models.segments.density import DensitySegmenter
from online_models.segments.kmeans import Segmenter

__all__ = ["DensitySegmenter", "Segmenter"]
