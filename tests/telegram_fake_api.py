"""Re-export of ``tests.fakes.telegram``, where this fake now lives; import from there."""

from tests.fakes.telegram import *  # noqa: F403
