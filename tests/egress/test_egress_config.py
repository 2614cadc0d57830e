"""The ``egress`` section of the configuration."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import ConfigError, EgressConfig, parse_config

MINIMAL: dict[str, Any] = {
    "plans": {"free": {"requests_per_minute": 1, "images_per_day": 1}},
    "backends": {"local": {"type": "local"}},
    "models": {"local": "local"},
}


def test_without_the_section_nothing_is_allowed() -> None:
    assert parse_config(MINIMAL, {}).egress == EgressConfig(allow=())


def test_networks_and_names_are_accepted() -> None:
    raw = {**MINIMAL, "egress": {"allow": ["10.20.0.0/16", "fd00::1", "images.internal"]}}

    config = parse_config(raw, {})

    assert config.egress.allow == ("10.20.0.0/16", "fd00::1", "images.internal")


@pytest.mark.parametrize(
    ("egress", "message"),
    [
        ({"allow": "10.0.0.0/8"}, "egress.allow: must be a list"),
        ({"allow": [8]}, "egress.allow[0]: must be a string"),
        (
            {"allow": ["10.0.0.0/8", "10.0.0.0/33"]},
            "egress.allow[1]: '10.0.0.0/33' is neither a network (CIDR), an address nor"
            " a host name",
        ),
        ({"allowed": []}, "egress.allowed: unknown key"),
        ([], "egress: must be a mapping"),
    ],
)
def test_mistakes_name_the_key(egress: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**MINIMAL, "egress": egress}, {})

    assert str(caught.value) == message
