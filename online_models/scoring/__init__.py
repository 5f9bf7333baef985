"""The batch core: scores a batch of customers with every family's models; customer state,
features, votes, reasons and the alert policy."""
