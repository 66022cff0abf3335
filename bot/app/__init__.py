"""Assembling and running a Siyu process: configuration, runtime, HTTP assembly and the ``siyu`` CLI."""
