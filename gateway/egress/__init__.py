"""Connections the gateway makes on behalf of untrusted data: where they may go
(:mod:`~gateway.egress.policy`) and the client that keeps to it
(:mod:`~gateway.egress.client`)."""
