"""Exchange sessions from a real calendar (exchange_calendars), tz-naive session dates."""

from __future__ import annotations

import warnings
from functools import lru_cache

import exchange_calendars as xcals
import pandas as pd


@lru_cache(maxsize=8)
def _calendar(code: str) -> xcals.ExchangeCalendar:
    try:
        with warnings.catch_warnings():  # a pandas-3 deprecation inside exchange_calendars
            warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
            return xcals.get_calendar(code, start="1990-01-01")
    except xcals.errors.InvalidCalendarName as exc:
        raise ValueError(f"unknown exchange calendar {code!r} (e.g. XNYS, XLON, XTSE)") from exc


def sessions(code: str, start: pd.Timestamp | str, end: pd.Timestamp | str) -> pd.DatetimeIndex:
    """Session dates from ``start`` to ``end`` inclusive, tz-naive, ns unit."""
    start, end = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize()
    if end < start:
        return pd.DatetimeIndex([], dtype="datetime64[ns]")
    cal = _calendar(code)
    lo = max(start, cal.first_session.tz_localize(None) if cal.first_session.tz else cal.first_session)
    hi = min(end, cal.last_session.tz_localize(None) if cal.last_session.tz else cal.last_session)
    days = cal.sessions_in_range(lo, hi)
    return pd.DatetimeIndex(days.tz_localize(None) if days.tz else days).as_unit("ns")


def previous_session(code: str, day: pd.Timestamp | str) -> pd.Timestamp:
    """The last session on or before ``day``."""
    day = pd.Timestamp(day).normalize()
    days = sessions(code, day - pd.Timedelta(days=14), day)
    if len(days) == 0:
        raise ValueError(f"no {code} session in the two weeks before {day.date()}")
    return days[-1]


def sessions_between(code: str, older: pd.Timestamp, newer: pd.Timestamp) -> int:
    """Number of sessions strictly after ``older`` up to and including ``newer``."""
    return len(sessions(code, pd.Timestamp(older) + pd.Timedelta(days=1), newer))


def session_bounds(code: str, day: pd.Timestamp | str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Open and close of session ``day`` in UTC (early closes included)."""
    cal = _calendar(code)
    day = pd.Timestamp(day).normalize()
    if not cal.is_session(day):
        raise ValueError(f"{day.date()} is not a {code} session")
    return cal.session_open(day).tz_convert("UTC"), cal.session_close(day).tz_convert("UTC")
