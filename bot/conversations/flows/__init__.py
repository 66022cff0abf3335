"""Declarative multi-step conversations (flows) and their persisted breakpoints.

``definition`` reads and validates flow files (``templates/flows/*.toml``, format in
docs/flows.md); ``engine`` runs a flow on a conversation row, saving the breakpoint at
every step.
"""

from bot.conversations.flows.definition import Flow, FlowError, FlowLibrary, Step, load_flows
from bot.conversations.flows.engine import FlowRun, Outgoing, Turn

__all__ = [
    "Flow",
    "FlowError",
    "FlowLibrary",
    "FlowRun",
    "Outgoing",
    "Step",
    "Turn",
    "load_flows",
]
