"""The core of every event: the normalized Event, the router, Context, filters, clock, templates."""
