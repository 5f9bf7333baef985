"""The commands an operator runs around the worker: the CLI, demo, replay, backtest and tools."""
