"""The batch core: scores customers with every family's models (``scorer``, ``engine``,
``batch_scoring``), over batch features, votes and reasons, with each customer's ``state``
and the ``alert_policy``."""

from online_models.scoring.engine import ScoringEngine
from online_models.scoring.scorer import CustomerScorer, ScorerConfig
from online_models.scoring.state import CustomerState

__all__ = ["CustomerScorer", "CustomerState", "ScorerConfig", "ScoringEngine"]
