"""Fake providers: small aiohttp apps that speak each provider's real wire format.

Each records every request it gets (method, path, headers, JSON body, or a multipart
form as ``{name: [values]}`` with files as bytes), checks the
credentials the way the provider does, serves image downloads under ``/files/``, and
answers the API call according to ``mode``:

``ok``; ``bad_request`` (400 whose message echoes the credential, as some providers
do); ``unauthorized`` (the provider's bad-key answer, also echoing it);
``rate_limited`` (429 with ``Retry-After: 7``); ``unavailable`` (503); ``server_error``
(500); ``not_json`` (200 with an HTML body); ``no_images`` (200, valid JSON, no images);
``hang`` (waits for ``release``, which the fixture sets at teardown).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from aiohttp import web

from gateway.backends.local import render_png
from gateway.media.inspect import inspect_image
from tests.support.streams import convert, send_image_events

__all__ = [
    "CREDENTIAL_HEADERS",
    "A1111Fake",
    "GeminiFake",
    "OpenAIFake",
    "ProviderFake",
    "Recorded",
    "ReplicateFake",
    "Serve",
    "b64",
    "decode_png",
]

#: Headers that could carry a credential of any kind.
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie"}
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode_png(data: bytes) -> tuple[int, int]:
    """Fully decode an 8-bit RGB PNG's structure; its ``(width, height)``."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert size is not None, "no IHDR"
    width, height = size
    assert len(zlib.decompress(idat)) == height * (1 + 3 * width), "pixel data has the wrong size"
    return width, height


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any

    def credentials(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items() if k.lower() in CREDENTIAL_HEADERS}


class ProviderFake:
    """What every provider's fake shares: recording, credentials, modes, downloads."""

    prefix = ""

    def __init__(self, secret: str) -> None:
        #: The credential the provider expects (echoed by the failure modes).
        self.secret = secret
        self.mode = "ok"
        self.requests: list[Recorded] = []
        self.release = asyncio.Event()
        self.origin = ""
        self._files: dict[str, bytes] = {}
        self._names = itertools.count()

    @property
    def base_url(self) -> str:
        return self.origin + self.prefix

    def api_requests(self) -> list[Recorded]:
        return [r for r in self.requests if not r.path.startswith("/files/")]

    def downloads(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith("/files/")]

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            body: Any
            if request.content_type == "multipart/form-data":
                body = {}  # name -> its values, in order: text, or a file's bytes
                for name, value in (await request.post()).items():
                    read = value.file.read() if isinstance(value, web.FileField) else value
                    body.setdefault(name, []).append(read)
            else:
                raw = await request.read()
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
            self.requests.append(
                Recorded(request.method, request.path, dict(request.headers), body)
            )
            return await handler(request)

        app = web.Application(middlewares=[record], client_max_size=64 * 1024 * 1024)
        self.add_routes(app.router)
        app.router.add_get("/files/{name}", self._serve_file)
        return app

    def add_routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError

    def file_url(self, data: bytes) -> str:
        name = f"{next(self._names)}.png"
        self._files[name] = data
        return f"{self.origin}/files/{name}"

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        data = self._files.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="image/png")

    async def failure(self) -> web.StreamResponse | None:
        """The answer the current mode calls for, or ``None`` to answer with images."""
        if self.mode == "hang":
            await self.release.wait()
            return self.error(503, "released at teardown")
        if self.mode == "bad_request":
            return self.error(400, f"The prompt was rejected (request by {self.secret}).")
        if self.mode == "unauthorized":
            return self.unauthorized()
        if self.mode == "rate_limited":
            response = self.error(429, "Rate limit reached for requests.")
            response.headers["Retry-After"] = "7"
            return response
        if self.mode == "unavailable":
            return self.error(503, "The service is overloaded; try again later.")
        if self.mode == "server_error":
            return self.error(500, "The server had an error while processing your request.")
        if self.mode == "not_json":
            return web.Response(
                text="<html><h1>502 Bad Gateway</h1></html>", content_type="text/html"
            )
        if self.mode == "no_images":
            return web.json_response(self.no_images())
        assert self.mode == "ok", self.mode
        return None

    def error(self, status: int, message: str) -> web.Response:
        raise NotImplementedError

    def unauthorized(self) -> web.Response:
        return self.error(401, f"Incorrect API key provided: {self.secret}.")

    def no_images(self) -> Any:
        raise NotImplementedError


class OpenAIFake(ProviderFake):
    """``POST /v1/images/generations``: ``b64_json`` images, or ``url`` ones; with
    ``stream``, OpenAI's events. ``output_format`` jpeg/webp re-encodes the images; the
    dall-e models refuse the gpt-image parameters, as OpenAI does."""

    prefix = "/v1"

    def __init__(self, secret: str) -> None:
        super().__init__(secret)
        self.as_urls = False
        #: False: ``stream`` is ignored, as by compatible servers that cannot stream.
        self.streams = True
        #: Edits and variations: answer this many images fewer than asked for.
        self.short_by = 0

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/images/generations", self.generations)
        router.add_post("/v1/images/edits", self.edits)
        router.add_post("/v1/images/variations", self.edits)

    def error(self, status: int, message: str) -> web.Response:
        kind = "invalid_request_error" if status < 500 else "server_error"
        error = {"message": message, "type": kind, "param": None, "code": None}
        return web.json_response({"error": error}, status=status)

    def no_images(self) -> Any:
        return {"created": 1700000000}

    async def generations(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.secret}":
            return self.error(401, "You didn't provide a valid API key.")
        body = await request.json()
        failure = await self.failure()
        if failure is not None:
            return failure
        for field in ("model", "prompt", "n", "size"):
            if field not in body:
                return self.error(400, f"Missing required parameter: '{field}'.")
        if "response_format" in body and body["model"].startswith("gpt-image"):
            return self.error(400, "Unknown parameter: 'response_format'.")
        if body["model"].startswith("dall-e"):
            for name in ("background", "output_format", "output_compression", "moderation"):
                if name in body:
                    return self.error(400, f"Unknown parameter: '{name}'.")
        width, height = (int(v) for v in body["size"].split("x"))
        fmt, quality = body.get("output_format"), body.get("output_compression")
        if body.get("stream") and self.streams:
            return await send_image_events(
                request,
                body,
                render=lambda i, block: convert(
                    render_png(body["prompt"], None, width, height, i, block), fmt, quality
                ),
            )
        data = []
        for i in range(body["n"]):
            png = convert(render_png(body["prompt"], None, width, height, i), fmt, quality)
            item = {"url": self.file_url(png)} if self.as_urls else {"b64_json": b64(png)}
            item["revised_prompt"] = f"{body['prompt']}, in watercolour"
            data.append(item)
        return web.json_response({"created": 1700000000, "data": data})

    async def edits(self, request: web.Request) -> web.StreamResponse:
        """``/images/edits`` and ``/images/variations``: multipart, as OpenAI takes them
        (``image`` or ``image[]``, ``mask`` the size of the first image, a PNG)."""
        if request.headers.get("Authorization") != f"Bearer {self.secret}":
            return self.error(401, "You didn't provide a valid API key.")
        form: dict[str, list[Any]] = self.requests[-1].body
        failure = await self.failure()
        if failure is not None:
            return failure
        editing = request.path.endswith("/edits")
        required = ("model", "n", "size") + (("prompt",) if editing else ())
        for name in required:
            if name not in form:
                return self.error(400, f"Missing required parameter: '{name}'.")
        images = form.get("image", []) + form.get("image[]", [])
        if not images or (not editing and len(images) != 1):
            return self.error(400, "Invalid 'image': send one image file.")
        sizes = [inspect_image(image) for image in images]
        if "mask" in form:
            mask = inspect_image(form["mask"][0])
            if (mask.width, mask.height) != (sizes[0].width, sizes[0].height):
                return self.error(400, "Invalid 'mask': it must be the size of the image.")
        prompt = form["prompt"][0] if editing else "variation"
        width, height = (int(v) for v in form["size"][0].split("x"))
        if editing and form.get("stream") == ["true"] and self.streams:
            fields = {name: values[0] for name, values in form.items() if name in _EDIT_TEXT}
            for name in ("n", "partial_images", "output_compression"):
                if name in fields:
                    fields[name] = int(fields[name])
            return await send_image_events(
                request,
                fields,
                render=lambda i, block: render_png(prompt, len(images), width, height, i, block),
                kind="image_edit",
            )
        data = [
            {
                "b64_json": b64(render_png(prompt, len(images), width, height, i)),
                "revised_prompt": None,
            }
            for i in range(int(form["n"][0]) - self.short_by)
        ]
        return web.json_response({"created": 1700000000, "data": data})


#: An edit form's text fields.
_EDIT_TEXT = frozenset(
    {
        "model",
        "prompt",
        "n",
        "size",
        "quality",
        "background",
        "output_format",
        "output_compression",
        "input_fidelity",
        "partial_images",
        "stream",
        "user",
    }
)


class A1111Fake(ProviderFake):
    """Stable Diffusion WebUI's ``POST /sdapi/v1/txt2img`` behind ``--api-auth``."""

    def __init__(self, username: str | None, password: str) -> None:
        super().__init__(password)
        #: ``None``: the WebUI runs without ``--api-auth``.
        self.username = username
        #: Put a grid before the images, as the WebUI does with "return grid" enabled.
        self.grid = False
        #: Whether ``info`` is the usual JSON (it says where the first image is).
        self.info = True

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/sdapi/v1/txt2img", self.txt2img)
        router.add_post("/sdapi/v1/img2img", self.txt2img)

    def error(self, status: int, message: str) -> web.Response:
        if status >= 500:
            body = {"error": "RuntimeError", "detail": "", "body": "", "errors": message}
            return web.json_response(body, status=status)
        return web.json_response({"detail": message}, status=status)

    def unauthorized(self) -> web.Response:
        return web.json_response({"detail": "Incorrect username or password"}, status=401)

    def no_images(self) -> Any:
        return {"parameters": {}, "info": "{}"}

    async def txt2img(self, request: web.Request) -> web.StreamResponse:
        expected = "Basic " + b64(f"{self.username}:{self.secret}".encode())
        if self.username is not None and request.headers.get("Authorization") != expected:
            return self.unauthorized()
        body = await request.json()
        failure = await self.failure()
        if failure is not None:
            return failure
        required = ["prompt", "width", "height", "batch_size"]
        if request.path.endswith("/img2img"):
            required.append("init_images")
            for image in body.get("init_images", []) + [body.get("mask", "")] * ("mask" in body):
                inspect_image(base64.b64decode(image))  # raises on anything else
        missing = [f for f in required if f not in body]
        if missing:
            detail = [{"loc": ["body", f], "msg": "field required"} for f in missing]
            return web.json_response({"detail": detail}, status=422)
        width, height, seed = body["width"], body["height"], body.get("seed", -1)
        pngs = [
            render_png(body["prompt"], seed, width, height, i) for i in range(body["batch_size"])
        ]
        first = 0
        if self.grid and len(pngs) > 1:
            pngs.insert(0, render_png("grid", seed, width * 2, height, 0))
            first = 1
        info = {"prompt": body["prompt"], "seed": seed, "index_of_first_image": first}
        return web.json_response(
            {
                "images": [b64(p) for p in pngs],
                "parameters": body,
                "info": json.dumps(info) if self.info else "",
            }
        )


class GeminiFake(ProviderFake):
    """``POST /v1beta/models/{model}:generateContent``: one image per call."""

    prefix = "/v1beta"
    model = "gemini-2.5-flash-image"
    _STATUS: ClassVar[dict[int, str]] = {
        400: "INVALID_ARGUMENT",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
    }

    def __init__(self, secret: str) -> None:
        super().__init__(secret)
        #: Calls (counted from 0) answered with HTTP 500.
        self.failing_calls: set[int] = set()
        #: Hold each answer until this many calls have arrived (proves they overlap).
        self.wait_for_calls = 0
        self.snake_case = False
        #: Refuse the prompt: no candidates, ``promptFeedback.blockReason``.
        self.block_reason: str | None = None
        #: Put a draft ("thought") image before the final one, as thinking models do.
        self.thought_image = False
        self.calls = 0
        self._arrived = asyncio.Condition()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1beta/models/{call}", self.generate_content)

    def error(self, status: int, message: str) -> web.Response:
        error = {"code": status, "message": message, "status": self._STATUS.get(status, "UNKNOWN")}
        return web.json_response({"error": error}, status=status)

    def unauthorized(self) -> web.Response:
        # Google answers a bad key with 400, not 401.
        error = {
            "code": 400,
            "message": f"API key not valid ({self.secret}). Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                }
            ],
        }
        return web.json_response({"error": error}, status=400)

    def no_images(self) -> Any:
        parts = [{"text": "I can't draw that, but here is a poem instead."}]
        return {"candidates": [{"content": {"parts": parts, "role": "model"}, "index": 0}]}

    async def generate_content(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["call"] != f"{self.model}:generateContent":
            return self.error(404, "Model not found.")
        if request.headers.get("x-goog-api-key") != self.secret:
            return self.unauthorized()
        body = await request.json()
        index = self.calls
        self.calls += 1
        async with self._arrived:
            self._arrived.notify_all()
            await self._arrived.wait_for(lambda: self.calls >= self.wait_for_calls)
        failure = await self.failure()
        if failure is not None:
            return failure
        if index in self.failing_calls:
            return self.error(500, "Internal error encountered.")
        if self.block_reason:
            return web.json_response({"promptFeedback": {"blockReason": self.block_reason}})
        prompt = body["contents"][0]["parts"][0]["text"]
        for part in body["contents"][0]["parts"][1:]:  # images to edit: real ones
            inline = part["inlineData"]
            info = inspect_image(base64.b64decode(inline["data"]))
            if info.media_type != inline["mimeType"]:
                return self.error(400, "Invalid inline data: the mime type does not match.")
        config = body["generationConfig"]
        if config.get("responseModalities") != ["TEXT", "IMAGE"]:
            return self.error(400, "The model needs responseModalities TEXT and IMAGE.")
        ratio = config.get("imageConfig", {}).get("aspectRatio", "1:1")
        a, b = (int(v) for v in ratio.split(":"))
        png = render_png(prompt, None, 16 * a, 16 * b, index)
        if self.snake_case:
            image = {"inline_data": {"mime_type": "image/png", "data": b64(png)}}
        else:
            image = {"inlineData": {"mimeType": "image/png", "data": b64(png)}}
        parts = [{"text": "Here is your picture."}, image]
        if self.thought_image:
            draft = render_png("draft", None, 8, 8, index)
            thought = {"inlineData": {"mimeType": "image/png", "data": b64(draft)}, "thought": True}
            parts.insert(0, thought)
        return web.json_response(
            {
                "candidates": [
                    {"content": {"parts": parts, "role": "model"}, "finishReason": "STOP"}
                ],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 1290},
                "modelVersion": self.model,
            }
        )


class ReplicateFake(ProviderFake):
    """Replicate's predictions API: create (sync mode), get, cancel; outputs as URLs."""

    prefix = "/v1"

    def __init__(self, secret: str) -> None:
        super().__init__(secret)
        #: Reads answered "processing" before the prediction ends.
        self.polls_before_done = 0
        #: How it ends: "succeeded", "failed", or "never".
        self.outcome = "succeeded"
        #: Reads wait for ``release`` (a hanging poll).
        self.hang_polls = False
        #: Where ``urls.get``/``urls.cancel`` point; default: this server.
        self.urls_origin: str | None = None
        self.predictions: dict[str, dict[str, Any]] = {}
        self.cancelled: list[str] = []
        self._polls: dict[str, int] = {}
        self._ids = itertools.count(1)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/models/{owner}/{name}/predictions", self.create)
        router.add_post("/v1/predictions", self.create)
        router.add_get("/v1/predictions/{id}", self.get)
        router.add_post("/v1/predictions/{id}/cancel", self.cancel)

    def error(self, status: int, message: str) -> web.Response:
        body = {"title": "Request failed", "detail": message, "status": status}
        return web.json_response(body, status=status, content_type="application/problem+json")

    def unauthorized(self) -> web.Response:
        detail = "You did not pass a valid authentication token"
        body = {"title": "Unauthenticated", "detail": detail, "status": 401}
        return web.json_response(body, status=401, content_type="application/problem+json")

    def no_images(self) -> Any:
        prediction = self._new_prediction({"prompt": "x"}, None)
        prediction.update(status="succeeded", output=None)
        return prediction

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.secret}"

    def _new_prediction(self, model_input: dict[str, Any], version: str | None) -> dict[str, Any]:
        prediction_id = f"pred{next(self._ids):04d}xyz"
        own = f"{self.urls_origin or self.origin}/v1/predictions/{prediction_id}"
        prediction = {
            "id": prediction_id,
            "model": "black-forest-labs/flux-schnell",
            "version": version or "hidden",
            "input": model_input,
            "logs": "",
            "output": None,
            "error": None,
            "status": "starting",
            "created_at": "2025-01-01T00:00:00.000Z",
            "urls": {"get": own, "cancel": f"{own}/cancel", "web": "https://replicate.com/p/x"},
        }
        self.predictions[prediction_id] = prediction
        self._polls[prediction_id] = 0
        return prediction

    def _finish(self, prediction: dict[str, Any]) -> None:
        if self.outcome == "failed":
            prediction.update(status="failed", error="NSFW content detected. Try another prompt.")
            return
        model_input = prediction["input"]
        outputs = [
            self.file_url(
                render_png(
                    model_input["prompt"],
                    model_input.get("seed"),
                    model_input["width"],
                    model_input["height"],
                    i,
                )
            )
            for i in range(model_input["num_outputs"])
        ]
        prediction.update(status="succeeded", output=outputs)

    async def create(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self.unauthorized()
        body = await request.json()
        failure = await self.failure()
        if failure is not None:
            return failure
        if not isinstance(body.get("input"), dict) or "prompt" not in body["input"]:
            return self.error(422, "input: prompt is required")
        if "owner" not in request.match_info and "version" not in body:
            return self.error(422, "version is required")
        prediction = self._new_prediction(body["input"], body.get("version"))
        if self.polls_before_done == 0 and self.outcome != "never":
            self._finish(prediction)  # sync mode: done within the wait
        return web.json_response(prediction, status=201)

    async def get(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self.unauthorized()
        if self.hang_polls:
            await self.release.wait()
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None:
            return self.error(404, "Not found.")
        self._polls[prediction["id"]] += 1
        if prediction["status"] in ("starting", "processing"):
            prediction["status"] = "processing"
            if self.outcome != "never" and self._polls[prediction["id"]] > self.polls_before_done:
                self._finish(prediction)
        return web.json_response(prediction)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self.unauthorized()
        prediction = self.predictions.get(request.match_info["id"])
        if prediction is None:
            return self.error(404, "Not found.")
        self.cancelled.append(prediction["id"])
        if prediction["status"] in ("starting", "processing"):
            prediction["status"] = "canceled"
        return web.json_response(prediction)


F = TypeVar("F", bound=ProviderFake)


class Serve(Protocol):
    """The ``serve`` fixture: ``await serve(fake)`` runs ``fake`` on a real socket."""

    async def __call__(self, fake: F) -> F: ...
