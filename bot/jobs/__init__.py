"""Batch jobs: durable units of long work (campaign preparation, console imports) that
worker processes claim, run with a renewed lease and record (see bot/jobs/queue.py)."""
