"""``python -m gateway``: the ``gateway`` command (:mod:`gateway.cli`)."""

from __future__ import annotations

import os
import sys

from gateway.cli import main

__all__ = ["main"]

if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
