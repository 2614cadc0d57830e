"""The openai backend's answer parsing: what msgspec makes of the whole answer, found faster.

:func:`gateway.backends.openai.decode_answer` finds plain base64 ``b64_json`` strings by
``bytes.find`` and lets msgspec parse the rest; every answer here must give what msgspec
gives for the whole answer (the same items, or the same error), and the plain ones must
not hand the base64 to msgspec at all.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any, cast

import msgspec
import pytest

from gateway.backends import base64_codec
from gateway.backends import openai as openai_backend
from gateway.backends.base import UpstreamError
from gateway.backends.openai import decode_answer
from tests.support.images import noise_png

TEXT = base64.b64encode(random.Random(7).randbytes(3000)).decode()
#: One image whose base64 has ``/`` digits, to be escaped as ``\/`` (legal JSON).
assert "/" in TEXT
ITEM = f'{{"b64_json":"{TEXT}","revised_prompt":null}}'
#: A prompt of 300 escaped quotes.
QUOTES = '\\"' * 300


def compact(*items: str, extra: str = "") -> bytes:
    return f'{{"created":1,"data":[{",".join(items)}]{extra}}}'.encode()


ANSWERS = {
    # as encoders write them
    "compact": compact(ITEM),
    "compact, 4 images": compact(ITEM, ITEM, ITEM, ITEM),
    "json.dumps": json.dumps({"created": 1, "data": [{"b64_json": TEXT}] * 2}).encode(),
    "indented": json.dumps({"created": 1, "data": [{"b64_json": TEXT}]}, indent=2).encode(),
    "tabs and CRLF": f'{{"data":[{{"b64_json"\t\r\n:\r\n\t"{TEXT}"}}]}}'.encode(),
    "gpt-image, with usage": json.dumps(
        {
            "created": 1,
            "background": "opaque",
            "data": [{"b64_json": TEXT}],
            "output_format": "png",
            "usage": {
                "input_tokens": 50,
                "input_tokens_details": {"image_tokens": 40, "text_tokens": 10},
                "output_tokens": 50,
                "total_tokens": 100,
            },
        },
        indent=2,
    ).encode(),
    "empty string": compact('{"b64_json":""}'),
    "many quotes before": compact(ITEM, extra=',"tags":[' + ",".join(['"t"'] * 200) + "]"),
    "many quotes in a prompt": compact(f'{{"b64_json":"{TEXT}","revised_prompt":"{QUOTES}"}}'),
    "a large string elsewhere": compact(f'{{"url":"data:image/png;base64,{TEXT * 30}"}}', ITEM),
    "url items": compact('{"url":"https://x/a.png"}', ITEM),
    "extra fields": compact(
        '{"b64_json":"QUJD","size":[1,{"a":null}],"url":null}',
        extra=',"usage":{"total_tokens":5,"d":{"x":[true]}},"background":"opaque"',
    ),
    "prompt with quotes and \\u": compact(
        f'{{"b64_json":"{TEXT}","revised_prompt":"say \\"hi\\" \\u00e9 \\/"}}'
    ),
    "bytearray body": bytearray(compact(ITEM, ITEM)),
    # escaped strings: the same JSON value, not plain base64 text
    "escaped slashes": compact(ITEM.replace("/", "\\/")),
    "\\u escapes": compact(ITEM.replace("A", "\\u0041")),
    "one escaped, one plain": compact(ITEM.replace("/", "\\/"), ITEM),
    "line breaks": compact(f'{{"b64_json":"{TEXT[:76]}\\n{TEXT[76:]}"}}'),
    "data: URL": compact(f'{{"b64_json":"data:image/png;base64,{TEXT}"}}'),
    "escaped key": compact(f'{{"b64\\u005fjson":"{TEXT}"}}', ITEM),
    # values that are no base64 string
    "number": compact('{"b64_json":12}', ITEM),
    "null": compact('{"b64_json":null}'),
    "object": compact(f'{{"b64_json":{{"b64_json":"{TEXT}"}}}}'),
    "array": compact(f'{{"b64_json":["{TEXT}"]}}'),
    "missing": compact('{"revised_prompt":"p"}'),
    # b64_json keys elsewhere, and look-alikes of the markers
    "nested in an extra field": compact(ITEM, extra=f',"usage":{{"b64_json":"{TEXT}"}}'),
    "at the top": f'{{"b64_json":"{TEXT}","data":[{ITEM}]}}'.encode(),
    "in the url": compact(f'{{"url":{{"b64_json":"{TEXT}"}}}}'),
    "a key ending in it": compact(f'{{"x\\"b64_json":"{TEXT}"}}', ITEM),
    "as a value": compact('{"url":"b64_json"}', ITEM),
    "twice in one item": compact(f'{{"b64_json":"{TEXT}","b64_json":"QUJD"}}'),
    "data twice": f'{{"data":[{ITEM}],"data":[{{"b64_json":"QUJD"}}]}}'.encode(),
    "a marker in a prompt": compact(f'{{"b64_json":"{TEXT}","revised_prompt":"#0"}}'),
    "a marker as an escaped key's value": compact(
        '{"b64\\u005fjson":"#1"}', ITEM, extra=f',"x":{{"b64_json":"{TEXT}"}}'
    ),
    "a marker as a value": compact(f'{{"b64_json":"#0","url":"{TEXT}"}}', ITEM),
    # malformed
    "not JSON": b"<html>502</html>",
    "no data": b'{"created":1}',
    "data not a list": f'{{"data":{{"b64_json":"{TEXT}"}}}}'.encode(),
    "cut in a string": compact(ITEM)[:2000],
    "cut after a string": compact(ITEM)[: compact(ITEM).index(b'","revised') + 1],
    "no closing quote at all": f'{{"data":[{{"b64_json":"{TEXT}'.encode(),
    "no comma after a string": compact(ITEM.replace('","revised', '" "revised')),
    "a control character": compact(ITEM.replace(TEXT, TEXT[:99] + "\x01" + TEXT[100:])),
    "a raw quote": compact(ITEM.replace(TEXT, TEXT[:99] + '"' + TEXT[100:])),
    "a bad escape": compact(ITEM.replace(TEXT, TEXT[:99] + "\\q" + TEXT[100:])),
    "a DEL and a byte over 127": compact(ITEM.replace(TEXT, TEXT[:99] + "\x7f\x80" + TEXT[99:])),
    "a lone surrogate": compact('{"b64_json":"\\ud800"}'),
    "the key's string unclosed": b'{"data":[{"b64_json:"QUJD"}]}',
    "trailing garbage": compact(ITEM) + b"x",
    "two documents": compact(ITEM) * 2,
    "a string before the key": b'{"data":[{"x""b64_json":"QUJD"}]}',
    "a colon in a string before": b'{"data":["b64_json":"QUJD"]}',
    "digits after a key that is a string": b'{"data":[1,"b64_json":"1"]}',
    "invalid UTF-8 outside": compact(ITEM, extra=',"x":"\xff"').replace(b"\xc3\xbf", b"\xff"),
}


def what_msgspec_makes(body: bytes | bytearray) -> Any:
    """The whole answer decoded by msgspec, as the backend did before: items or error."""
    try:
        answer = msgspec.json.decode(body, type=openai_backend._Answer)
    except msgspec.DecodeError as exc:
        return type(exc), str(exc)
    return [(bytes(item.b64_json), item.url, item.revised_prompt) for item in answer.data]


def what_the_backend_makes(body: bytes | bytearray) -> Any:
    try:
        answer = decode_answer(body)
    except msgspec.DecodeError as exc:
        return type(exc), str(exc)
    return [(bytes(item.b64_json), item.url, item.revised_prompt) for item in answer.data]


@pytest.mark.parametrize("body", ANSWERS.values(), ids=ANSWERS.keys())
def test_every_answer_gives_what_msgspec_gives_for_the_whole_answer(
    body: bytes | bytearray,
) -> None:
    assert what_the_backend_makes(body) == what_msgspec_makes(body)


def test_the_cases_cover_successes_and_errors() -> None:
    outcomes = [what_msgspec_makes(body) for body in ANSWERS.values()]
    assert sum(isinstance(outcome, list) for outcome in outcomes) >= 25
    assert sum(isinstance(outcome, tuple) for outcome in outcomes) >= 15


@pytest.mark.parametrize(
    "name",
    [
        "compact",
        "compact, 4 images",
        "json.dumps",
        "indented",
        "tabs and CRLF",
        "gpt-image, with usage",
        "a large string elsewhere",
    ],
)
def test_plain_base64_strings_are_not_handed_to_msgspec(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    decoder = openai_backend._ANSWER

    class Recording:
        def decode(self, body: bytes) -> Any:
            decoded.append(len(body))
            return decoder.decode(body)

    monkeypatch.setattr(openai_backend, "_ANSWER", Recording())

    body = ANSWERS[name]

    answer = decode_answer(body)

    images = [bytes(item.b64_json) for item in answer.data if bytes(item.b64_json)]
    assert images
    assert set(images) == {f'"{TEXT}"'.encode()}
    assert len(decoded) == 1  # the skeleton, once
    assert decoded[0] < len(body) - len(images) * len(TEXT) + 200


@pytest.mark.parametrize("count", [1, 4])
async def test_each_images_base64_is_decoded_whole_once_on_its_way_to_an_image(
    count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The answer's parse checks every digit of a plain base64 string by decoding it; the
    # image made from it is then not decoded whole again (only its first 16 digits, for
    # its signature). noise_png: incompressible, so the base64 is as long as it gets.
    image = base64.b64encode(noise_png(64, 64)).decode()
    body = compact(*[f'{{"b64_json":"{image}"}}'] * count)
    decoded: list[int] = []
    decode = base64_codec.decode

    def counting(text: bytes | bytearray | memoryview) -> bytes:
        decoded.append(len(text))
        return decode(text)

    monkeypatch.setattr(base64_codec, "decode", counting)
    backend = openai_backend.OpenAIBackend("x", {"base_url": "http://127.0.0.1:9"})

    images = await backend._images_of(cast(Any, None), decode_answer(body), count)

    assert [bytes(generated.encoded()) for generated in images] == [image.encode()] * count
    assert [generated.media_type for generated in images] == ["image/png"] * count
    assert sum(decoded) <= count * (len(image) + 16)


@pytest.mark.parametrize("escaped", [False, True], ids=["plain", "escaped"])
async def test_a_stray_character_deep_inside_an_image_is_refused_however_it_is_written(
    escaped: bool,
) -> None:
    # Only a string the parse decoded whole skips the second full decode; one it left to
    # msgspec (escapes) or could not decode (the stray "!") is checked digit by digit.
    image = base64.b64encode(noise_png(64, 64)).decode()
    middle = len(image) // 2
    spoiled = image[:middle] + "!" + image[middle + 1 :]
    if escaped:
        spoiled = spoiled.replace("/", "\\/")
    good = f'{{"b64_json":"{image}"}}'
    body = compact(f'{{"b64_json":"{spoiled}"}}', good)
    backend = openai_backend.OpenAIBackend("x", {"base_url": "http://127.0.0.1:9"})

    with pytest.raises(UpstreamError, match="malformed image"):
        await backend._images_of(cast(Any, None), decode_answer(body), 2)
    images = await backend._images_of(cast(Any, None), decode_answer(compact(good)), 1)
    assert bytes(images[0].encoded()) == image.encode()
