"""Churn: the risk model, its labels and its quality."""
