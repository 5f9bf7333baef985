"""The vocabulary every family learns from: a customer's activity and profile."""
