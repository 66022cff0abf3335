"""Campaigns: managers' pushes with pilot and holdout, and the push engine scenarios share.

``spec`` parses a definition, ``push`` queues a chunk of an audience (policy, coupons,
render, bulk outbox insert), ``manage`` runs a campaign's life (preview, pilot, evaluate,
launch, pause), ``funnel`` counts what happened.
"""
