"""Recommendations: factors, co-purchase, content and ranking."""
