"""Every HTTP body as a type, one module per area.

A body's validation (:func:`gateway.http.body.decode_body`), its encoding
(:func:`gateway.http.responses.json_response`) and its OpenAPI schema
(:mod:`gateway.http.openapi`) are all derived from these types. A limit is a constant
next to the type that enforces it.
"""

__all__: list[str] = []
