"""UTC months as numbers (months since 1970-01), as the admission script counts them."""

from __future__ import annotations

import datetime as dt

__all__ = ["month_of_day", "month_start", "next_month_start"]

_EPOCH = dt.date(1970, 1, 1)


def month_of_day(day: int) -> int:
    """The month of a UTC day number (days since 1970-01-01)."""
    date = _EPOCH + dt.timedelta(days=day)
    return (date.year - 1970) * 12 + date.month - 1


def month_start(month: int) -> dt.datetime:
    """Midnight UTC on the first day of ``month``."""
    year, index = divmod(month, 12)
    return dt.datetime(1970 + year, index + 1, 1, tzinfo=dt.UTC)


def next_month_start(month: int) -> dt.datetime:
    """When ``month``'s allowance ends: the start of the next month."""
    return month_start(month + 1)
