"""The vocabulary every family learns from: a customer's activity (``activity``) and the
profile built from it (``profile``: features for churn, segments and outliers)."""

from online_models.customer.activity import Activity
from online_models.customer.profile import CustomerProfile

__all__ = ["Activity", "CustomerProfile"]
