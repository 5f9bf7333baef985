"""Deterministic simulator of a realistic customer event stream, for the demo and the tests."""

import logging

from streams.commands.simulator.stream import SimulationConfig, generate_events, generate_messages

__all__ = ["SimulationConfig", "generate_events", "generate_messages"]

logger = logging.getLogger(__name__)
