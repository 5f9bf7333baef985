"""Recommendations: the recommender (``recommender``: factors, popularity, co-purchase), its
ranking (``ranking``), the items the group shares (``items``, ``sync``), the catalogue's
content (``content``) and the hit rate (``quality``)."""

from online_models.recommend.content import ContentModel
from online_models.recommend.quality import RecommendationQuality
from online_models.recommend.recommender import Recommender

__all__ = ["ContentModel", "RecommendationQuality", "Recommender"]
