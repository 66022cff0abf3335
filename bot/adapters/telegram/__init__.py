"""The Telegram channel: updates in, outbox messages out, limits, and the staff relay group."""
