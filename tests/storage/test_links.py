"""The link format, as someone verifying a link elsewhere would compute it."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway import errors
from gateway.storage import FileLinks, LinkSigner
from tests.storage.conftest import OLD_SECRET, SECRET

FILE_ID = "file_0123456789abcdefABCDEF.png"


def test_the_signature_is_hmac_sha256_of_id_and_expiry_base64url_unpadded():
    links = FileLinks(LinkSigner([SECRET.encode()]), ttl_seconds=600)
    url = urlsplit(links.sign_url(FILE_ID, 1_700_000_000.7, "https://img.example.com/"))
    assert (url.scheme, url.netloc, url.path) == (
        "https",
        "img.example.com",
        f"/v1/files/{FILE_ID}",
    )
    query = parse_qs(url.query)
    assert query["expires"] == ["1700000600"]
    digest = hmac.new(SECRET.encode(), f"{FILE_ID}:1700000600".encode(), hashlib.sha256).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert query["signature"] == [expected]
    assert len(expected) == 43


def test_verify():
    signer = LinkSigner([SECRET.encode(), OLD_SECRET.encode()])
    old = LinkSigner([OLD_SECRET.encode()]).signature(FILE_ID, 2000)
    assert signer.verify(FILE_ID, "2000", old, now=1999.9) == 2000
    assert signer.verify(FILE_ID, "2000", signer.signature(FILE_ID, 2000), now=0) == 2000
    with pytest.raises(errors.UrlExpired):
        signer.verify(FILE_ID, "2000", old, now=2000)
    with pytest.raises(errors.InvalidSignature):  # a bad signature is that, expired or not
        signer.verify(FILE_ID, "1000", old, now=2000)
    for expires, signature in [(None, old), ("2000", None), ("+2000", old), ("2000", old[:-1])]:
        with pytest.raises(errors.InvalidSignature):
            signer.verify(FILE_ID, expires, signature, now=0)
