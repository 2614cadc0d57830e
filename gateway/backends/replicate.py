"""The ``replicate`` backend: a Replicate model run as a prediction (a job).

``submit`` creates the prediction (``POST {base_url}/models/{model}/predictions``, or
``POST {base_url}/predictions`` with a ``version``) in sync mode (``Prefer: wait=N``),
so a fast model is done in one round trip; ``poll`` reads it (``urls.get``), ``cancel``
stops it (``urls.cancel``). Output URLs are downloaded without credentials, under the
egress policy (:mod:`gateway.egress`). The key goes only to ``base_url``'s own host:
``urls`` elsewhere are ignored for the ``base_url`` ones.

Edits and variations, for a model that takes an image: ``image_input`` names the input
the image goes to (``image``, ``input_image``: the model's own name), sent as a
``data:`` URI; ``mask_input`` the input for the mask (without it, a request with a mask
is refused, 400 ``param: mask``: never silently dropped); ``image_input_list: true``
when the image input takes a list (all the images, in order; otherwise more than one is
refused, 400 ``param: image[]``). A variation sends an empty prompt.

Options: ``base_url`` (default ``https://api.replicate.com/v1``), ``api_key_env``
(required), ``model`` (``owner/name``) or ``version`` (exactly one), ``image_input``,
``mask_input``, ``image_input_list``, ``sizes``, ``timeout_seconds``,
``poll_interval_seconds`` (default 0.5), ``input_names`` (below).

``output_format`` (png, jpeg as ``jpg``, webp) and ``output_compression`` go into the
model's input as ``output_format`` and ``output_quality`` (FLUX's and most image
models' names); ``input_names`` maps them to a model's own (``{output_compression:
quality}``), and ``capabilities: {output_format: [png], output_compression: false}``
refuses them for a model without such inputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.backends.base import (
    EDIT,
    GENERATE,
    VARIATION,
    BackendContext,
    ImageRequest,
    InputImage,
    JobBackend,
    JobState,
    JobStatus,
)
from gateway.backends.base64_codec import encode as b64encode
from gateway.backends.capabilities import Capabilities
from gateway.backends.upstream import (
    Upstream,
    env_option,
    float_option,
    gather_successes,
    read_secret,
    refusal,
    request_headers,
    same_origin,
    text_option,
    url_option,
)
from gateway.config import ConfigError
from gateway.errors import ContentPolicyViolation, UpstreamError, UpstreamRefused

__all__ = ["ReplicateBackend"]

DEFAULT_BASE_URL = "https://api.replicate.com/v1"
_MODEL = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_VERSION = re.compile(r"^[A-Za-z0-9_./:-]{1,200}$")
_PREDICTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_PENDING = frozenset({"starting", "processing"})
_FAILED = frozenset({"failed", "canceled", "aborted"})
_CANCEL_SECONDS = 5.0
#: The model input each parameter goes to, unless ``input_names`` says otherwise.
_INPUT_NAMES = {"output_format": "output_format", "output_compression": "output_quality"}
#: ``output_format`` in Replicate models' own words.
_FORMATS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
_INPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class _Job:
    """Where a pending prediction is read and cancelled, and how many images it owes."""

    get: str
    cancel: str
    n: int | None = None


class ReplicateBackend(JobBackend):
    options = (
        "base_url",
        "api_key_env",
        "model",
        "version",
        "image_input",
        "mask_input",
        "image_input_list",
        "sizes",
        "timeout_seconds",
        "poll_interval_seconds",
        "input_names",
    )
    capabilities = Capabilities(output_format=("png", "jpeg", "webp"), output_compression=True)

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        self._base_url = url_option(name, options, "base_url", DEFAULT_BASE_URL)
        self._api_key_env = env_option(name, options, "api_key_env", required=True)
        model = text_option(name, options, "model")
        self._version = text_option(name, options, "version")
        if (model is None) == (self._version is None):
            raise ConfigError(f"backends.{name}.model: set exactly one of model and version")
        if model is not None and not _MODEL.match(model):
            raise ConfigError(f"backends.{name}.model: must be 'owner/name'")
        if self._version is not None and not _VERSION.match(self._version):
            raise ConfigError(f"backends.{name}.version: must be a version id")
        if model is not None:
            self._create_url = f"{self._base_url}/models/{model}/predictions"
        else:
            self._create_url = f"{self._base_url}/predictions"
        self._image_input = text_option(name, options, "image_input")
        self._mask_input = text_option(name, options, "mask_input")
        image_list = options.get("image_input_list", False)
        if not isinstance(image_list, bool):
            raise ConfigError(f"backends.{name}.image_input_list: must be true or false")
        self._image_list = image_list
        if self._image_input is None and (self._mask_input is not None or image_list):
            raise ConfigError(f"backends.{name}.image_input: required with mask_input")
        if self._image_input is not None:
            self.operations = frozenset({GENERATE, EDIT, VARIATION})
        self.poll_interval_seconds = float_option(name, options, "poll_interval_seconds", 0.5)
        # Sync mode holds the request open for this long; it must end well before the
        # deadline, or the prediction's id arrives too late to cancel it.
        self._wait_seconds = min(60, int(self.timeout_seconds / 2))
        self._jobs: dict[str, _Job] = {}
        names = options.get("input_names", {})
        if not isinstance(names, Mapping) or not all(
            key in _INPUT_NAMES and isinstance(value, str) and _INPUT_NAME.match(value)
            for key, value in names.items()
        ):
            raise ConfigError(
                f"backends.{name}.input_names: must map {' and '.join(_INPUT_NAMES)} to input names"
            )
        self._input_names = {**_INPUT_NAMES, **names}
        self._upstream: Upstream | None = None

    def check_environment(self, environ: Mapping[str, str]) -> None:
        assert self._api_key_env is not None
        read_secret(self.name, "api_key_env", self._api_key_env, environ)

    async def start(self, context: BackendContext) -> None:
        assert self._api_key_env is not None
        key = read_secret(self.name, "api_key_env", self._api_key_env)
        self._upstream = Upstream(
            context,
            name=self.name,
            timeout_seconds=self.timeout_seconds,
            headers={"Authorization": f"Bearer {key}"},
            secrets=[key],
        )

    def _started(self) -> Upstream:
        assert self._upstream is not None, "start() was not called"
        return self._upstream

    async def submit(self, request: ImageRequest) -> tuple[str, JobStatus]:
        upstream = self._started()
        model_input: dict[str, Any] = {
            "prompt": request.prompt,
            "num_outputs": request.n,
            "width": request.width,
            "height": request.height,
        }
        if request.seed is not None:
            model_input["seed"] = request.seed
        if request.output_format is not None:
            model_input[self._input_names["output_format"]] = _FORMATS[request.output_format]
        if request.output_compression is not None:
            model_input[self._input_names["output_compression"]] = request.output_compression
        if request.images:
            model_input.update(self._image_inputs(request))
        body: dict[str, Any] = {"input": model_input}
        if self._version is not None:
            body["version"] = self._version
        headers = request_headers(request)
        if self._wait_seconds >= 1:
            headers["Prefer"] = f"wait={self._wait_seconds}"
        prediction = await upstream.call("POST", self._create_url, body=body, headers=headers)
        job_id = _prediction_id(prediction)
        status = await self._status_of(prediction, request.n)
        if status.state is JobState.PENDING:
            self._jobs[job_id] = self._job_of(job_id, prediction, request.n)
        return job_id, status

    def _image_inputs(self, request: ImageRequest) -> dict[str, Any]:
        """The model's image (and mask) inputs for an edit or a variation."""
        assert self._image_input is not None  # only then are edits sent here
        inputs: dict[str, Any] = {}
        if self._image_list:
            inputs[self._image_input] = [_data_uri(image) for image in request.images]
        elif len(request.images) > 1:
            raise UpstreamRefused(
                f"The model '{request.model}' edits one image at a time.", param="image[]"
            )
        else:
            inputs[self._image_input] = _data_uri(request.images[0])
        if request.mask is not None:
            if self._mask_input is None:
                raise UpstreamRefused(f"The model '{request.model}' takes no mask.", param="mask")
            inputs[self._mask_input] = _data_uri(request.mask)
        return inputs

    async def poll(self, job_id: str) -> JobStatus:
        upstream = self._started()
        job = self._jobs.get(job_id) or self._job_of(job_id, None, None)
        prediction = await upstream.call("GET", job.get)
        if _prediction_id(prediction) != job_id:
            raise UpstreamError("The image backend sent a malformed response.")
        status = await self._status_of(prediction, job.n)
        if status.state is not JobState.PENDING:
            self._jobs.pop(job_id, None)
        return status

    async def cancel(self, job_id: str) -> None:
        upstream = self._started()
        job = self._jobs.pop(job_id, None) or self._job_of(job_id, None, None)
        await upstream.call("POST", job.cancel, max_seconds=_CANCEL_SECONDS)

    def _job_of(self, job_id: str, prediction: Any, n: int | None) -> _Job:
        own = f"{self._base_url}/predictions/{job_id}"
        urls = prediction.get("urls") if isinstance(prediction, dict) else None
        urls = urls if isinstance(urls, dict) else {}
        get, cancel = urls.get("get"), urls.get("cancel")
        return _Job(
            get=get if isinstance(get, str) and same_origin(get, self._base_url) else own,
            cancel=(
                cancel
                if isinstance(cancel, str) and same_origin(cancel, self._base_url)
                else f"{own}/cancel"
            ),
            n=n,
        )

    async def _status_of(self, prediction: Any, n: int | None) -> JobStatus:
        """The prediction as a :class:`JobStatus`, its outputs downloaded if it succeeded."""
        assert isinstance(prediction, dict)  # _prediction_id checked it
        upstream = self._started()
        state = prediction.get("status")
        if not isinstance(state, str):
            raise UpstreamError("The image backend sent a malformed response.")
        if state in _PENDING:
            return JobStatus(JobState.PENDING)
        if state in _FAILED:
            error = prediction.get("error")
            if isinstance(error, str) and error.strip():
                detail = upstream.sanitize(error)
                refused = refusal(detail)
                if isinstance(refused, ContentPolicyViolation):  # the request's own fault
                    return JobStatus(JobState.FAILED, error=refused.message, refused=refused)
                message = f"The image backend failed: {detail}"
            else:
                message = f"The image backend's job ended as {state}."
            return JobStatus(JobState.FAILED, error=message)
        if state != "succeeded":
            raise UpstreamError("The image backend sent a malformed response.")
        output = prediction.get("output")
        urls = [output] if isinstance(output, str) else output
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise UpstreamError("The image backend sent a malformed response.")
        if not urls:
            return JobStatus(JobState.FAILED, error="The image backend returned no images.")
        urls = urls[:n] if n is not None else urls
        images = await gather_successes(self.name, [upstream.download_image(u) for u in urls])
        return JobStatus(JobState.SUCCEEDED, images=images)


def _data_uri(image: InputImage) -> str:
    return f"data:{image.media_type};base64,{str(b64encode(image.data), 'ascii')}"


def _prediction_id(prediction: Any) -> str:
    job_id = prediction.get("id") if isinstance(prediction, dict) else None
    if not isinstance(job_id, str) or not _PREDICTION_ID.match(job_id):
        raise UpstreamError("The image backend sent a malformed response.")
    return job_id
