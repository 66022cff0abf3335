"""Siyu (私域): a chat-based private-domain operations bot."""

__version__ = "0.1.0"
