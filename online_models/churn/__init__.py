"""Churn: the risk model (``model``), the labels it waits for (``labels``), its quality."""

from online_models.churn.labels import PendingExample
from online_models.churn.model import ChurnModel, ChurnShare
from online_models.churn.quality import ChurnQuality

__all__ = ["ChurnModel", "ChurnQuality", "ChurnShare", "PendingExample"]
