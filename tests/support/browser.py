"""A real browser for the console's tests: Debian's Chromium driven by Playwright.

Playwright never downloads a browser here: ``scripts/chromium.sh`` installs the
system's Chromium when it is missing (as ``scripts/services.sh`` does for Postgres and
Redis) and Playwright is pointed at it. Screenshots go to the run's artifacts directory,
``.run/artifacts/console/`` (``GATEWAY_ARTIFACTS_DIR`` to change it), which git ignores.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.paths import ROOT

__all__ = ["ARTIFACTS", "PageWatch", "chromium_or_reason", "screenshot"]

ARTIFACTS = Path(os.environ.get("GATEWAY_ARTIFACTS_DIR", ROOT / ".run" / "artifacts")) / "console"


def chromium_or_reason() -> tuple[str | None, str]:
    """``(path of Chromium, "")``, or ``(None, why there is none)``."""
    script = ROOT / "scripts" / "chromium.sh"
    try:
        done = subprocess.run(
            [str(script)], capture_output=True, text=True, timeout=900, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"scripts/chromium.sh could not run: {exc}"
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        return None, f"no Chromium for the browser tests: {said[-1] if said else done.returncode}"
    return done.stdout.strip(), ""


@dataclass
class PageWatch:
    """What a page said on its console, and the errors it raised."""

    errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"console.{message.type}: {message.text}")
                if message.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))


async def screenshot(page: Any, name: str) -> Path:
    """Save what the page shows, whole, as ``<ARTIFACTS>/<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
