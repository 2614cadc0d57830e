"""The API key format: ``<prefix><32 base62 random><6 base62 checksum>``, checked with no I/O."""

from __future__ import annotations

import hashlib
import re

import pytest

from gateway.keys.format import display_prefix, generate_key, hash_key, parse_key
from tests.support.config import KEY_PREFIX

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_RE = re.compile(rf"^{KEY_PREFIX}[0-9A-Za-z]{{38}}$")


@pytest.fixture
def key() -> str:
    return generate_key(KEY_PREFIX)


def test_generated_key_is_prefix_then_38_base62_chars(key: str):
    assert KEY_RE.fullmatch(key), key
    assert len(key) == len(KEY_PREFIX) + 38


@pytest.mark.parametrize("prefix", ["nb_live_", "nb_test_", "sk", "X"])
def test_parse_key_accepts_generated_keys(prefix: str):
    for _ in range(50):
        key = generate_key(prefix)
        parsed = parse_key(key, prefix)
        assert parsed is not None, key
        assert parsed.key_hash == hash_key(key)


def test_every_single_character_change_in_random_part_or_checksum_is_rejected(key: str):
    for position in range(len(KEY_PREFIX), len(key)):
        for char in BASE62:
            if char == key[position]:
                continue
            changed = key[:position] + char + key[position + 1 :]
            assert parse_key(changed, KEY_PREFIX) is None, (position, changed)


def test_swapping_two_adjacent_different_characters_is_rejected(key: str):
    for position in range(len(KEY_PREFIX), len(key) - 1):
        a, b = key[position], key[position + 1]
        if a == b:
            continue
        swapped = key[:position] + b + a + key[position + 2 :]
        assert parse_key(swapped, KEY_PREFIX) is None, (position, swapped)


def test_wrong_prefix_is_rejected(key: str):
    tail = key[len(KEY_PREFIX) :]
    assert parse_key("nb_live_" + tail, KEY_PREFIX) is None
    assert parse_key(key, "nb_live_") is None
    # The checksum covers the prefix: the same tail under another prefix of the
    # same length is not a valid key there either.
    assert parse_key("nb_live_" + tail, "nb_live_") is None
    assert parse_key(key.upper(), KEY_PREFIX) is None


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda k: k[:-1], id="one-short"),
        pytest.param(lambda k: k + "0", id="one-long"),
        pytest.param(lambda k: k[: len(KEY_PREFIX)], id="prefix-only"),
        pytest.param(lambda k: k[len(KEY_PREFIX) :], id="no-prefix"),
        pytest.param(lambda k: k + k[-6:], id="checksum-twice"),
        pytest.param(lambda k: " " + k, id="leading-space"),
        pytest.param(lambda k: k + "\n", id="trailing-newline"),
        pytest.param(lambda k: "", id="empty"),
    ],
)
def test_wrong_length_is_rejected(key: str, mangle):
    assert parse_key(mangle(key), KEY_PREFIX) is None


@pytest.mark.parametrize(
    "char", ["-", "_", "+", "/", "=", " ", ".", "é", "\u0663", "\uff21", "\x00"]
)
def test_non_base62_characters_are_rejected(key: str, char: str):
    for position in (len(KEY_PREFIX), len(KEY_PREFIX) + 17, len(key) - 1):
        bad = key[:position] + char + key[position + 1 :]
        assert len(bad) == len(key)
        assert parse_key(bad, KEY_PREFIX) is None, repr(bad)


def test_empty_and_junk_strings_are_rejected():
    assert parse_key("", KEY_PREFIX) is None
    assert parse_key(KEY_PREFIX, KEY_PREFIX) is None
    assert parse_key(KEY_PREFIX + "0" * 38, KEY_PREFIX) is None
    assert parse_key("Bearer " + generate_key(KEY_PREFIX), KEY_PREFIX) is None


def test_hash_key_is_sha256_hex(key: str):
    digest = hash_key(key)
    assert digest == hashlib.sha256(key.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hash_key(key) != hash_key(generate_key(KEY_PREFIX))


def test_display_prefix_is_short_and_never_the_whole_key(key: str):
    shown = display_prefix(key, KEY_PREFIX)
    random_part = key[len(KEY_PREFIX) : len(KEY_PREFIX) + 32]
    assert shown.startswith(KEY_PREFIX)
    assert len(shown) < len(key)
    assert random_part not in shown
    assert key not in shown
    # It does identify the key to its owner: its start and its end.
    assert shown == f"{key[: len(KEY_PREFIX) + 4]}...{key[-4:]}"


def test_keys_are_unique_over_1000_draws():
    keys = [generate_key(KEY_PREFIX) for _ in range(1000)]
    assert len(set(keys)) == 1000
    assert len({k[len(KEY_PREFIX) : len(KEY_PREFIX) + 32] for k in keys}) == 1000
    assert len({hash_key(k) for k in keys}) == 1000


def test_random_part_uses_the_whole_base62_alphabet():
    seen = set()
    for _ in range(200):
        seen.update(generate_key(KEY_PREFIX)[len(KEY_PREFIX) : len(KEY_PREFIX) + 32])
    assert seen == set(BASE62)
