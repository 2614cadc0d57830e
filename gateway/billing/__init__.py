"""Usage and credit events for billing systems, sent as CloudEvents (``billing:``)."""
