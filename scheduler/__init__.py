"""The one scheduler of a Siyu deployment: APScheduler 3.11 with a SQLAlchemy job store.

Only the process holding the scheduler lock (``scheduler.lock``) runs it; the others stand
by and take over when the holder dies. Jobs are importable functions taking ids only
(``scheduler.jobs``).
"""
