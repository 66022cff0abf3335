"""Fakes of the platforms' network edges, shared by the tests and the benchmarks.

- ``tests.fakes.telegram``: a fake Telegram Bot API over real HTTP, update builders and
  ``TelegramHarness`` (the real adapter wired to it).
- ``tests.fakes.wechat``: a fake WeChat / WeCom API server, ``CallbackSigner`` (callbacks
  built and encrypted the way WeChat does) and ``RunningSiyu``.
- ``tests.fakes.platform``: a fake channel recording deliveries in PostgreSQL, for the
  multi-process delivery and crash tests.

Only the platform is faked; every one of them drives Siyu's own code for real.
"""
