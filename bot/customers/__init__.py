"""Knowing every customer: attributes, orders, RFM and tiers, segments, imports."""
