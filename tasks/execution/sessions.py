"""Exchange-session arithmetic for the execution layer (dates as ISO strings)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from tasks.data.calendar import previous_session, sessions, sessions_between


def sessions_after(calendar: str) -> Callable[[str, str], int]:
    """f(older, newer) = number of sessions in (older, newer] (0 when newer <= older)."""

    def count(older: str, newer: str) -> int:
        return 0 if newer <= older else sessions_between(calendar, pd.Timestamp(older),
                                                         pd.Timestamp(newer))
    return count


def window(calendar: str, session: str, n: int) -> list[str]:
    """The ``n`` sessions ending at ``session`` (inclusive)."""
    day = pd.Timestamp(session)
    span = sessions(calendar, day - pd.Timedelta(days=int(n * 1.6) + 10), day)
    return [d.date().isoformat() for d in span[-n:]]


def session_ahead(calendar: str, session: str, n: int) -> str | None:
    """The ``n``-th session after ``session`` (``session`` itself for 0; None beyond the
    calendar)."""
    if n <= 0:
        return session
    day = pd.Timestamp(session)
    span = sessions(calendar, day + pd.Timedelta(days=1), day + pd.Timedelta(days=int(n * 1.6) + 10))
    return span[n - 1].date().isoformat() if len(span) >= n else None


def session_before(calendar: str, session: str) -> str:
    """The session before ``session``."""
    return previous_session(calendar, pd.Timestamp(session) - pd.Timedelta(days=1)).date().isoformat()


def is_session(calendar: str, day: str) -> bool:
    return len(sessions(calendar, day, day)) == 1
