"""Reading the gateway's ``/metrics`` text."""

from __future__ import annotations

__all__ = ["metric_total"]


def metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of metric ``name``'s samples in ``/metrics`` text with these label values."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
