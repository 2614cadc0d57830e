"""``POST /v1/images/edits`` and ``POST /v1/images/variations``: OpenAI's multipart calls.

authenticate -> read the form (streamed, within limits: :mod:`gateway.http.multipart`)
-> validate (the fields as a typed body, each file checked as an image, the parameters
checked against the model's backend as a generation's are) -> then the generation path
from admission on (:func:`gateway.http.images.make_images`; an edit with ``stream``
answers ``image_edit`` events), or a job (``Prefer: respond-async``, the uploaded images
kept in the object store for the worker).

The form is read once and kept on the request (:data:`FORM`): an ``Idempotency-Key``
compares its digest, the handler then uses it. Its files (held in memory up to a
threshold, in temporary files past it) are freed when the request ends, however it ends.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from gateway import errors
from gateway.backends.base import EDIT, VARIATION, ImageRequest, InputImage
from gateway.backends.capabilities import check_request
from gateway.config import ServerConfig
from gateway.http.api_key_auth import authenticate
from gateway.http.body import convert
from gateway.http.idempotency import HEADER, IDEMPOTENCY_TAKEN, idempotent
from gateway.http.images import (
    GenerationParams,
    check_size,
    image_options,
    make_images,
    route_model,
    wants_async,
)
from gateway.http.middlewares import REQUEST_ID, UPSTREAM_SECONDS
from gateway.http.multipart import SPILL_BYTES, Form, FormFile, FormLimits, read_form
from gateway.http.schemas.edits import (
    EDIT_TEXT_FIELDS,
    MAX_INPUT_IMAGES,
    VARIATION_TEXT_FIELDS,
    EditRequest,
    VariationRequest,
)
from gateway.http.schemas.images import AUTO_SIZE, MAX_PROMPT_CHARS, MAX_USER_CHARS
from gateway.keys.cache import KeyRecord
from gateway.media.inspect import ImageInfo, MalformedImage, inspect_image
from gateway.services import SERVICES, Services

__all__ = ["FORM", "Upload", "create_variations", "edit_images", "parse_upload", "upload_of"]

#: The request's form, once read.
FORM = web.RequestKey("uploaded_form", Form)
#: Files larger than this (spilled to disk) are read and checked in a worker thread
#: (a walk costs about 1.3 ms per MB).
_INLINE_CHECK_BYTES = SPILL_BYTES
_SHORT = 64
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_UPLOADED_FORMATS = frozenset({"png", "jpeg", "webp"})


@dataclass(frozen=True, slots=True)
class Upload:
    """What one of the two endpoints takes."""

    operation: str
    schema: type[EditRequest] | type[VariationRequest]
    file_fields: frozenset[str]
    #: The longest value of each text field, in bytes (UTF-8: 4 per character at most).
    text_bytes: Mapping[str, int]
    #: The formats its images may be in.
    formats: frozenset[str]
    verb: str


#: The longest value of a text field, in bytes; a field not named here is short.
_TEXT_BYTES = {"model": 256, "prompt": MAX_PROMPT_CHARS * 4, "user": MAX_USER_CHARS * 4}
EDITS = Upload(
    EDIT,
    EditRequest,
    frozenset({"image", "image[]", "mask"}),
    {name: _TEXT_BYTES.get(name, _SHORT) for name in EDIT_TEXT_FIELDS},
    _UPLOADED_FORMATS,
    "edit",
)
VARIATIONS = Upload(
    VARIATION,
    VariationRequest,
    frozenset({"image"}),
    {name: _TEXT_BYTES.get(name, _SHORT) for name in VARIATION_TEXT_FIELDS},
    frozenset({"png"}),
    "make variations of",
)


async def edit_images(request: web.Request) -> web.StreamResponse:
    return await _serve(request, EDITS)


async def create_variations(request: web.Request) -> web.StreamResponse:
    return await _serve(request, VARIATIONS)


async def _serve(request: web.Request, upload: Upload) -> web.StreamResponse:
    request[UPSTREAM_SECONDS] = []  # the middleware's Server-Timing (replays too)
    try:
        return await _run(request, upload)
    finally:
        form = request.get(FORM)
        if form is not None:
            form.close()


async def _run(request: web.Request, upload: Upload) -> web.StreamResponse:
    if HEADER in request.headers and IDEMPOTENCY_TAKEN not in request:
        return await idempotent(
            request,
            functools.partial(_run, upload=upload),
            functools.partial(_form_digest, upload=upload),
        )
    services: Services = request.app[SERVICES]
    config = services.config
    now = services.wall_clock()
    record = await authenticate(request, services.keys, config.keys.prefix, now)
    body, form = await upload_of(request, upload, services, record)
    params = await parse_upload(body, form, upload, services, record, request[REQUEST_ID])
    if "Prefer" in request.headers and wants_async(request):
        if params.request.stream:
            raise errors.InvalidRequest(
                "A job cannot stream: send 'stream': false (or leave it out), or call"
                f" POST {request.path} without 'Prefer: respond-async'.",
                param="stream",
            )
        # Imported here: the jobs edge builds on this module.
        from gateway.http.upload_jobs import submit_upload_job

        # As for generation jobs, `url` unless the form asks for `b64_json`.
        fmt = params.response_format if "response_format" in form.fields else "url"
        return await submit_upload_job(request, services, record, params, now, response_format=fmt)
    return await make_images(request, services, record, params, now)


async def _form_digest(request: web.Request, upload: Upload) -> bytes:
    form = await _form(request, upload, request.app[SERVICES].config.server)
    return form.digest.encode()


async def _form(request: web.Request, upload: Upload, server: ServerConfig) -> Form:
    form = request.get(FORM)
    if form is None:
        limits = FormLimits(
            file_fields=upload.file_fields,
            text_bytes=upload.text_bytes,
            max_file_bytes=server.max_upload_bytes,
            max_body_bytes=server.max_upload_bytes * (MAX_INPUT_IMAGES + 1) + server.max_body_bytes,
            read_timeout=server.body_read_timeout_seconds,
        )
        form = request[FORM] = await read_form(request, limits)
    return form


async def upload_of(
    request: web.Request, upload: Upload, services: Services, record: KeyRecord
) -> tuple[EditRequest | VariationRequest, Form]:
    """The request's form and its fields as ``upload``'s typed body (400 naming a bad
    field)."""
    form = await _form(request, upload, services.config.server)
    values: dict[str, object] = dict(form.fields)
    for file in form.files:
        if file.name == "image[]" or (file.name == "image" and "image" in values):
            if upload.operation == VARIATION:
                raise errors.InvalidRequest(
                    "Send one 'image' to make variations of.", param="image"
                )
            images = values.setdefault("image[]", [])
            assert isinstance(images, list)
            images.append(file.filename)
        else:
            values[file.name] = file.filename
    body = convert(values, upload.schema, {"most": record.max_images_per_request})
    return body, form


async def parse_upload(
    body: EditRequest | VariationRequest,
    form: Form,
    upload: Upload,
    services: Services,
    record: KeyRecord,
    request_id: str,
) -> GenerationParams:
    """What the type does not check: the plan's most images, the model (and whether its
    backend can do this), its sizes and capabilities (as for generations), and each file
    as an image (the mask: a PNG with an alpha channel, the size of the first image).
    Raises the 400/404 naming the field."""
    messages = upload.schema.messages
    prompt = ""
    if isinstance(body, EditRequest):
        prompt = body.prompt
        if prompt.isspace():
            raise errors.InvalidRequest(messages["prompt"], param="prompt")
    most = record.max_images_per_request
    n = 1 if body.n is None else body.n
    if n > most:
        raise errors.InvalidRequest(messages["n"].format(most=most), param="n")

    model_name, chain = route_model(services, body.model)
    backend = chain[0].backend
    if upload.operation not in backend.operations:
        raise errors.InvalidRequest(
            f"The model '{model_name}' cannot {upload.verb} images; choose a model whose"
            " backend can (GET /v1/models).",
            param="model",
        )
    size = AUTO_SIZE if body.size is None else body.size
    width, height = check_size(size, backend, model_name, messages["size"])
    response_format = body.response_format or "b64_json"
    options = image_options(body, response_format)
    images, mask = await _input_images(form, upload)
    request = ImageRequest(
        prompt=prompt,
        n=n,
        width=width,
        height=height,
        model=model_name,
        request_id=request_id,
        operation=upload.operation,
        images=images,
        mask=mask,
        **options,
    )
    check_request(request, backend.capabilities_for(model_name), model_name)
    return GenerationParams(
        model=model_name, chain=chain, request=request, response_format=response_format
    )


async def _input_images(
    form: Form, upload: Upload
) -> tuple[tuple[InputImage, ...], InputImage | None]:
    files = [file for file in form.files if file.name != "mask"]
    masks = [file for file in form.files if file.name == "mask"]
    if len(files) > MAX_INPUT_IMAGES:
        raise errors.InvalidRequest(upload.schema.messages["image[]"], param="image[]")
    if not files:
        raise errors.InvalidRequest(upload.schema.messages["image"], param="image")
    if len(masks) > 1:
        raise errors.InvalidRequest("Send at most one 'mask'.", param="mask")
    listed = len(files) > 1 or files[0].name == "image[]"
    images: list[InputImage] = []
    for index, file in enumerate(files):
        param = f"image[{index}]" if listed else "image"
        images.append(await _checked(file, param, upload.formats, index))
    mask = None
    if masks:
        mask = await _checked(masks[0], "mask", frozenset({"png"}), 0)
        first = images[0]
        if (mask.width, mask.height) != (first.width, first.height):
            raise errors.InvalidRequest(
                f"'mask' is {mask.width}x{mask.height}; it must be the size of the first"
                f" image, {first.width}x{first.height}.",
                param="mask",
            )
    return tuple(images), mask


def _read_and_inspect(file: FormFile) -> tuple[bytes, ImageInfo]:
    data = file.read()
    return data, inspect_image(data)


async def _checked(file: FormFile, param: str, formats: frozenset[str], index: int) -> InputImage:
    """``file`` as an :class:`InputImage`, or the 400 naming ``param``."""
    allowed = ", ".join(sorted(f.upper() for f in formats))
    try:
        if file.size > _INLINE_CHECK_BYTES:  # spilled to disk: read and walk it off the loop
            data, info = await asyncio.to_thread(_read_and_inspect, file)
        else:
            data, info = _read_and_inspect(file)
    except MalformedImage as exc:
        raise errors.InvalidRequest(
            f"'{param}' is not a well-formed image ({exc}); send {allowed}.", param=param
        ) from None
    if info.format not in formats:
        raise errors.InvalidRequest(
            f"'{param}' is {info.format.upper()}; send {allowed}.", param=param
        )
    if param == "mask" and not info.alpha:
        raise errors.InvalidRequest(
            "'mask' must be a PNG with an alpha channel (its transparent pixels say what"
            " to change).",
            param="mask",
        )
    name = "mask" if param == "mask" else f"image{index}"
    return InputImage(
        data=data,
        media_type=info.media_type,
        width=info.width,
        height=info.height,
        filename=f"{name}.{_EXTENSIONS[info.media_type]}",
    )
