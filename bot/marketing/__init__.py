"""Reaching customers at the right moment: policy, scenarios, campaigns, coupons, tracked links."""
