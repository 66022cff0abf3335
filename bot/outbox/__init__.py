"""The one send path: the durable outbox queue and the delivery worker that drains it."""
