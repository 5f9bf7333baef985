"""Deterministic simulator of a realistic customer event stream, for the demo and the tests."""

import logging

from streams.commands.simulator.stream import (
    SimulationConfig,
    catalogue_items,
    generate_events,
    generate_messages,
)

__all__ = ["SimulationConfig", "catalogue_items", "generate_events", "generate_messages"]

logger = logging.getLogger(__name__)
