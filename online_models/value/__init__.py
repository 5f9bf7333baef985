"""Value: RFM value ranks (``ranks``) and the lifetime outlook (``lifetime``: BG/NBD and
Gamma-Gamma, fitted on a sample of customers in ``lifetime_fit``)."""

from online_models.value.lifetime import LifetimeModel, LifetimeScore
from online_models.value.ranks import ValueModel

__all__ = ["LifetimeModel", "LifetimeScore", "ValueModel"]
