"""Segments: k-means, density (micro-clusters and regions), outliers and segment spread."""
