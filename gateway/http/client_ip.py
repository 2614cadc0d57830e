"""The client's address: the peer's, or from X-Forwarded-For when the peer is trusted."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

__all__ = ["ClientIp"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientIp:
    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        self._trusted: list[Network] = [
            ipaddress.ip_network(proxy, strict=False) for proxy in trusted_proxies
        ]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def of(self, request: web.Request) -> str:
        """The rightmost address not belonging to a trusted proxy."""
        peer = request.remote or "unknown"
        if not self._trusted or not self._is_trusted(peer):
            return peer
        forwarded = request.headers.getall("X-Forwarded-For", [])
        hops = [hop.strip() for line in forwarded for hop in line.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # a garbled chain: fall back to what we saw
        return peer
