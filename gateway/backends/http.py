"""The ``http`` backend: an upstream that already speaks this gateway's own format.

For another gateway, or an in-house service: ``POST {base_url}/images/generations``
with the OpenAI Images request body plus this gateway's ``seed`` and
``negative_prompt``, ``b64_json`` images back. It is the ``openai`` backend with a
required ``base_url`` and those two fields passed on, so it shares its limits: no
redirects followed, answers read up to a size bound, the upstream's words sanitised.

Options: ``base_url`` (required), ``model`` (the upstream's model name; default: the
client's), ``api_key_env`` (name of an environment variable holding the upstream's key,
sent as ``Authorization: Bearer``; never the client's key), ``sizes``,
``timeout_seconds``. Generations only: the format has no edits or variations.
"""

from __future__ import annotations

from typing import Any

from gateway.backends.base import GENERATE, ImageRequest
from gateway.backends.capabilities import Capabilities
from gateway.backends.openai import OpenAIBackend

__all__ = ["HttpBackend"]


class HttpBackend(OpenAIBackend):
    options = ("base_url", "model", "api_key_env", "sizes", "timeout_seconds")
    default_base_url = None
    #: The gateway's own format has no edits (nor variations).
    operations = frozenset({GENERATE})

    def model_capabilities(self, model: str) -> Capabilities:
        """Everything, whatever the model is called: the upstream speaks this gateway's
        own API and judges the values itself."""
        return self.capabilities

    def unsent_params(self, upstream_model: str) -> frozenset[str]:
        return frozenset()  # the upstream judges every value itself

    def request_body(self, request: ImageRequest) -> dict[str, Any]:
        body = super().request_body(request)
        body["response_format"] = "b64_json"
        if request.seed is not None:
            body["seed"] = request.seed
        if request.negative_prompt is not None:
            body["negative_prompt"] = request.negative_prompt
        return body
