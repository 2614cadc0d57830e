"""Images per day as an inline SVG bar chart, drawn on the server.

No script and no style attribute: sizes are SVG attributes and colours come from
classes in ``console.css`` (the page's CSP allows no inline style). Each bar has a
``<title>`` (a tooltip, and what a screen reader reads), and the chart's own title says
the total.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from gateway.console.html import esc

__all__ = ["daily_chart"]

_WIDTH, _HEIGHT, _AXIS = 600, 160, 20


def daily_chart(counts: Mapping[dt.date, int], end: dt.date, days: int = 30) -> str:
    """Bars for the ``days`` days ending with ``end`` (days without a count are 0)."""
    dates = [end - dt.timedelta(days=offset) for offset in range(days - 1, -1, -1)]
    values = [counts.get(date, 0) for date in dates]
    total = sum(values)
    top = max(values) or 1
    slot = _WIDTH / days
    plot = _HEIGHT - _AXIS
    bars = []
    for i, (date, value) in enumerate(zip(dates, values, strict=True)):
        height = round(plot * value / top, 1)
        noun = "image" if value == 1 else "images"
        bars.append(
            f'<rect class="bar" x="{round(i * slot + 1, 1)}" y="{round(plot - height, 1)}" '
            f'width="{round(slot - 2, 1)}" height="{height}">'
            f"<title>{date.isoformat()}: {value} {noun}</title></rect>"
        )
    labels = (
        f'<text class="axis" x="0" y="{_HEIGHT - 4}">{dates[0].isoformat()}</text>'
        f'<text class="axis" x="{_WIDTH}" y="{_HEIGHT - 4}" text-anchor="end">'
        f"{dates[-1].isoformat()}</text>"
    )
    title = f"Images per day, {dates[0].isoformat()} to {end.isoformat()}: {total} in total"
    return (
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        f'aria-labelledby="chart-title">'
        f'<title id="chart-title">{esc(title)}</title>'
        f'<line class="baseline" x1="0" y1="{plot}" x2="{_WIDTH}" y2="{plot}"/>'
        f"{''.join(bars)}{labels}</svg>"
    )
