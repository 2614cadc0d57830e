"""The egress policy: which addresses a connection made for untrusted data may reach."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.egress.policy import EgressPolicy, parse_allow_entry

STRICT = EgressPolicy.from_allow_list([])


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.7", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%1", "link-local"),
        ("100.64.0.1", "shared address space (CGNAT)"),
        ("100.127.255.254", "shared address space (CGNAT)"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("2001:db8::1", "documentation"),
        # IPv4 inside IPv6: judged by the IPv4 address they carry.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:7f00:1", "loopback"),
        ("::ffff:10.0.0.7", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::127.0.0.1", "loopback"),
        ("::ffff:0:127.0.0.1", "IPv4-translated"),
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 of 169.254.169.254
        ("64:ff9b::127.0.0.1", "loopback"),  # NAT64 of 127.0.0.1
        ("64:ff9b::a00:7", "private"),  # NAT64 of 10.0.0.7
        ("not-an-address", "not an IP address"),
    ],
)
def test_non_global_addresses_are_refused(address: str, reason: str) -> None:
    assert STRICT.refusal(address) == reason


@pytest.mark.parametrize(
    "address",
    [
        "93.184.215.14",
        "8.8.8.8",
        "2606:4700:4700::1111",
        "::ffff:93.184.215.14",
        "64:ff9b::808:808",
    ],
)
def test_global_addresses_are_permitted(address: str) -> None:
    assert STRICT.refusal(address) is None


def test_an_allowed_network_permits_its_addresses_and_no_others() -> None:
    policy = EgressPolicy.from_allow_list(["10.20.0.0/16", "127.0.0.1", "fd00::/8"])

    assert policy.refusal("10.20.3.4") is None
    assert policy.refusal("::ffff:10.20.3.4") is None
    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("fd00::2") is None
    assert policy.refusal("10.21.0.1") == "private"
    assert policy.refusal("127.0.0.2") == "loopback"
    assert policy.refusal("169.254.169.254") == "link-local"


def test_allowed_names_match_whatever_their_case_and_trailing_dot() -> None:
    policy = EgressPolicy.from_allow_list(["Images.Internal.Example."])

    assert policy.allows_name("images.internal.example")
    assert policy.allows_name("IMAGES.internal.example.")
    assert not policy.allows_name("internal.example")
    assert not policy.allows_name("evil-images.internal.example")
    assert not STRICT.allows_name("localhost")


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("10.0.0.0/8", ipaddress.ip_network("10.0.0.0/8")),
        ("10.1.2.3", ipaddress.ip_network("10.1.2.3/32")),
        ("10.1.2.3/8", ipaddress.ip_network("10.0.0.0/8")),
        ("fd00::/8", ipaddress.ip_network("fd00::/8")),
        ("::1", ipaddress.ip_network("::1/128")),
        ("images.internal.example", "images.internal.example"),
        ("LOCALHOST.", "localhost"),
    ],
)
def test_allow_entries_are_networks_or_names(entry: str, parsed: object) -> None:
    assert parse_allow_entry(entry) == parsed


@pytest.mark.parametrize(
    "entry", ["", "10.0.0.0/33", "999.1.1.1", "1.2.3", "images.example/path", "a b", "-x.example"]
)
def test_bad_allow_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="neither a network"):
        parse_allow_entry(entry)
