"""Where things are in the repository."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIGS", "ROOT"]

ROOT = Path(__file__).resolve().parent.parent.parent
#: One YAML file per configuration mistake, and ``valid.yaml`` they each differ from.
CONFIGS = ROOT / "tests" / "config" / "cases"
