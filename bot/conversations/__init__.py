"""Conversations that remember: flows and breakpoints, staff takeover, the relay group."""
