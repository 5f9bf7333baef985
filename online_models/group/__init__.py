"""The group model: one model for the consumer group (deltas, merges, versions)."""
