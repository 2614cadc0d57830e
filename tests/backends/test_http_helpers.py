"""The shared helpers: what may reach a client, what counts as an image."""

from __future__ import annotations

import base64
import random

import pytest

from gateway.backends.local import render_png
from gateway.backends.upstream import image_from_base64, sanitize
from gateway.errors import UpstreamError


def test_sanitize_redacts_credentials_and_keeps_it_short() -> None:
    text = (
        "bad key my-secret-value\nAuthorization: Bearer abc.def sk-proj-0123456789abcdef "
        + "x" * 500
    )

    clean = sanitize(text, ["my-secret-value"])

    assert "my-secret-value" not in clean
    assert "abc.def" not in clean
    assert "sk-proj" not in clean
    assert "\n" not in clean
    assert len(clean) <= 300


def test_data_urls_and_plain_base64_decode() -> None:
    png = render_png("p", 1, 8, 8)
    encoded = base64.b64encode(png).decode()

    assert image_from_base64(encoded).data == png
    assert image_from_base64(f"data:image/png;base64,{encoded}").data == png


@pytest.mark.parametrize(
    "encoded",
    ["not base64!", base64.b64encode(b"<html>an error page</html>").decode(), None, 12],
)
def test_what_is_not_an_image_is_refused(encoded: object) -> None:
    with pytest.raises(UpstreamError):
        image_from_base64(encoded)


def _as_before(encoded: str) -> tuple[bytes, str] | None:
    """What decoding and encoding again makes of ``encoded`` (None: refused)."""
    try:
        data = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:
        return None
    return data, base64.b64encode(data).decode()


@pytest.mark.parametrize("extra", [0, 1, 2])  # no, two and one "=" of padding
def test_base64_images_are_passed_on_as_sent(extra: int) -> None:
    encoded = base64.b64encode(render_png("p", 1, 8, 8) + b"\0" * extra).decode()

    image = image_from_base64(encoded)

    assert image.b64() == encoded
    assert (image.data, image.media_type) == (base64.b64decode(encoded), "image/png")


def test_base64_is_checked_as_decoding_would() -> None:
    """Valid base64 written differently is encoded anew; invalid base64 is refused."""
    rng = random.Random(7)
    head = base64.b64encode(render_png("p", 1, 8, 8)).decode()[:16]
    digits = "AQgw+/="
    for _ in range(3000):
        tail = "".join(rng.choice(digits) for _ in range(rng.randrange(9)))
        encoded = head + tail + rng.choice(["", "", "=", "==", " ", "-", "é"])
        try:
            image = image_from_base64(encoded)
        except UpstreamError:
            assert _as_before(encoded) is None, encoded
        else:
            assert (image.data, image.b64()) == _as_before(encoded), encoded
