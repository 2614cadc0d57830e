"""The shared helpers: what may reach a client, what counts as an image."""

from __future__ import annotations

import base64

import pytest

from gateway.backends._http import image_from_base64, sanitize
from gateway.backends.local import render_png
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
