"""Rate limits, daily quotas and usage reservations, enforced atomically in Redis."""
