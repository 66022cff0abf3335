"""Re-export of ``tests.fakes.wechat``, where this fake now lives; import from there."""

from tests.fakes.wechat import *  # noqa: F403
