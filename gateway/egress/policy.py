"""Where a connection made on behalf of untrusted data may go.

An image URL in an upstream's answer (and, later, a webhook URL a client gives) is
chosen by someone else: left alone, it makes the gateway reach its own network (the
cloud metadata service at 169.254.169.254, Redis on 127.0.0.1, a neighbour on 10.x).
:class:`EgressPolicy` says which addresses such a connection may reach:

* only globally routable unicast addresses. Refused: loopback, private (10/8,
  172.16/12, 192.168/16), link-local (169.254/16, fe80::/10), shared/CGNAT
  (100.64/10), unique-local (fc00::/7), multicast, unspecified, broadcast, reserved,
  documentation and benchmarking ranges, and anything else Python does not call
  global. IPv6 forms that embed an IPv4 address (``::ffff:127.0.0.1``, ``::127.0.0.1``,
  6to4, NAT64) are judged by the address they embed as well;
* unless the operator allows it (``egress.allow``): a network in CIDR form
  (``10.20.0.0/16``; a bare address is a /32 or /128), or a host name, whose
  addresses are then all permitted (``images.internal.example``).

The policy is pure (no I/O). :mod:`gateway.egress.client` applies it at connect time,
to the exact address each socket connects to.

This module imports nothing beyond the standard library: the configuration uses
:func:`parse_allow_entry` to check ``egress.allow`` at start-up.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["AllowEntry", "EgressPolicy", "parse_allow_entry"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: A parsed ``egress.allow`` entry: a network, or a host name in lower case.
AllowEntry = IPNetwork | str

_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)

# Why each range is refused, for the operator's log. Ordered: the first match names it.
_REFUSED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(network), reason)
    for network, reason in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("::ffff:0:0:0/96", "IPv4-translated"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignments"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "unique-local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def parse_allow_entry(entry: str) -> AllowEntry:
    """One ``egress.allow`` entry: a network (``10.0.0.0/8``, ``fd00::/8``, a bare
    address) or a host name (``images.internal.example``, case-insensitive).

    Raises:
        ValueError: it is neither.
    """
    text = entry.strip()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    name = text.lower().removesuffix(".")
    if not _HOST_NAME.match(name) or name.replace(".", "").isdigit():
        raise ValueError(f"{entry!r} is neither a network (CIDR), an address nor a host name")
    return name


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64)."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    as_int = int(address)
    if (as_int >> 32 == 0 and as_int > 1) or address in _NAT64:  # ::a.b.c.d, 64:ff9b::a.b.c.d
        return ipaddress.IPv4Address(as_int & 0xFFFFFFFF)
    return None


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Which addresses and host names a connection made for untrusted data may reach.

    Args:
        allow: ``egress.allow``: networks and host names the operator trusts (their own
            image hosts on a private network). Empty: only global addresses.
    """

    networks: tuple[IPNetwork, ...] = ()
    names: frozenset[str] = frozenset()

    @classmethod
    def from_allow_list(cls, allow: Iterable[str] = ()) -> EgressPolicy:
        """The policy for ``egress.allow``; :class:`ValueError` on a bad entry."""
        entries = [parse_allow_entry(entry) for entry in allow]
        return cls(
            networks=tuple(e for e in entries if not isinstance(e, str)),
            names=frozenset(e for e in entries if isinstance(e, str)),
        )

    def allows_name(self, host: str) -> bool:
        """True if ``host`` is an allow-listed name: any address it resolves to is fine."""
        return bool(self.names) and host.lower().removesuffix(".") in self.names

    def refusal(self, host: str) -> str | None:
        """Why a connection to the address ``host`` is refused, or ``None`` if permitted.

        ``host`` is an IP address as a socket sees it (``"127.0.0.1"``, ``"::1"``,
        ``"fe80::1%eth0"``); anything else is refused.
        """
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return "not an IP address"
        embedded = _embedded_ipv4(address)
        candidates = (address,) if embedded is None else (address, embedded)
        for candidate in candidates:
            if any(candidate in network for network in self.networks):
                return None
        for candidate in reversed(candidates):  # the embedded address names it best
            for network, reason in _REFUSED:
                if candidate.version == network.version and candidate in network:
                    return reason
        for candidate in candidates:
            if candidate.is_multicast:
                return "multicast"
            if not candidate.is_global:
                return "not globally routable"
        return None
