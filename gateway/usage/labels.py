"""The label usage is counted under: the model asked for and the backend that made the
images, as one string (``<model>\\x1f<backend>``, the unit separator: neither name holds
control characters), at most :data:`MAX_LABEL` bytes so that a reservation's journal slot
holds it whole."""

from __future__ import annotations

__all__ = ["MAX_LABEL", "SEPARATOR", "split_label", "usage_label"]

SEPARATOR = "\x1f"
MAX_LABEL = 128


def usage_label(model: str, backend: str) -> str:
    """The label of ``model`` made by ``backend``; a name too long for :data:`MAX_LABEL`
    is cut (the same way every time, so admission and settlement agree)."""
    label = f"{model}{SEPARATOR}{backend}"
    if len(label) <= MAX_LABEL // 4 or len(label.encode()) <= MAX_LABEL:
        return label
    half = (MAX_LABEL - 1) // 2
    return f"{_cut(model, half)}{SEPARATOR}{_cut(backend, half)}"


def split_label(label: str) -> tuple[str, str]:
    """``(model, backend)`` of ``label`` (``("", "")`` for usage from before labels)."""
    model, _, backend = label.partition(SEPARATOR)
    return model, backend


def _cut(name: str, most: int) -> str:
    return name.encode()[:most].decode(errors="ignore")
