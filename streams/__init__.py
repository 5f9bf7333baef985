"""The wiring: Faust app, topics, table, agent, Redis writer, alerts, metrics and CLI."""
