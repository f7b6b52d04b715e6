"""Trading state read by the daily plan: the book (net liquidity, positions) and closed episodes.

``data/state/portfolio.json`` holds ``{"net_liquidity": float, "positions": [{symbol, qty,
price, bucket, sector, delta, lots}, ...]}``; ``data/state/episodes.parquet`` holds closed
episodes with at least ``pnl``. Both are written by the execution side; before any session was
executed the plan is sized against ``guardrails.account_cash`` with no open positions and no
Kelly cap. The book is read strictly (:mod:`tasks.execution.ledger`): once sessions were
executed a missing, empty, garbled or wrong-shaped ``portfolio.json`` stops the run with a
one-line :class:`tasks.statefiles.StateFileError`, never an empty book.

A daily run for session D sizes against the book of its own session (:func:`session_book`):
``portfolio.json`` when it is at D or at the session before D, the committed execution record
of D for a past re-run; an unfinished session, a gap or a later book without D's record refuse.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from tasks.io import file_hash
from tasks.paths import Paths, state_dir
from tasks.risk.clamps import Book, book_from_frame
from tasks.settings import AppSettings


def _book(raw: dict[str, Any]) -> Book:
    positions = pd.DataFrame(raw.get("positions", []))
    return book_from_frame(positions if len(positions) else None, float(raw["net_liquidity"]))


def load_book(paths: Paths, settings: AppSettings) -> tuple[Book, dict[str, Any]]:
    """The current book (portfolio.json, strictly) and where it came from."""
    from tasks.execution.ledger import portfolio_path, read_portfolio

    book = read_portfolio(paths)
    if book is None:
        return Book(settings.guardrails.account_cash), {
            "source": "guardrails.account_cash", "net_liquidity": settings.guardrails.account_cash}
    path = portfolio_path(paths)
    raw = book.model_dump()
    return _book(raw), {"source": str(path), "sha256": file_hash(path),
                        "net_liquidity": float(raw["net_liquidity"])}


def session_book(paths: Paths, settings: AppSettings, day: str
                 ) -> tuple[Book, dict[str, Any]]:
    """The book a daily run for ``day`` sizes against (see the module docstring); refusals
    are :class:`tasks.execution.ledger.SessionOrderError`, damaged files StateFileError."""
    from tasks.execution import ledger

    where = ledger.daily_book(paths, settings.data.calendar, day)
    if where.source != "record":
        book, info = load_book(paths, settings)
        return book, {**info, "as_of_session": where.session}
    rec = ledger.read_record(paths, day)
    raw = ledger.book_of_record(rec)
    path = ledger.record_path(paths, day)
    return _book(raw), {"source": str(path), "sha256": file_hash(path),
                        "net_liquidity": float(raw["net_liquidity"]), "as_of_session": day}


def load_episodes(paths: Paths) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    path = state_dir(paths) / "episodes.parquet"
    if not path.is_file():
        return None, {"source": None, "n": 0}
    frame = pd.read_parquet(path)
    return frame, {"source": str(path), "sha256": file_hash(path), "n": int(len(frame))}
