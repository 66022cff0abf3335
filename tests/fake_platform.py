"""Re-export of ``tests.fakes.platform``, where this fake now lives; import from there."""

from tests.fakes.platform import *  # noqa: F403
