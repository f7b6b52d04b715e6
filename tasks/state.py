"""Trading state read by the daily plan: the book (net liquidity, positions) and closed episodes.

``data/state/portfolio.json`` holds ``{"net_liquidity": float, "positions": [{symbol, qty,
price, bucket, sector, delta, lots}, ...]}``; ``data/state/episodes.parquet`` holds closed
episodes with at least ``pnl``. Both are written by the execution side; before any exists the
plan is sized against ``guardrails.account_cash`` with no open positions and no Kelly cap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.io import file_hash
from tasks.paths import Paths
from tasks.risk.clamps import Book, book_from_frame
from tasks.settings import AppSettings


def state_dir(paths: Paths) -> Path:
    return paths.data / "state"


def load_book(paths: Paths, settings: AppSettings) -> tuple[Book, dict[str, Any]]:
    """The book to size against and where it came from."""
    path = state_dir(paths) / "portfolio.json"
    if not path.is_file():
        return Book(settings.guardrails.account_cash), {
            "source": "guardrails.account_cash", "net_liquidity": settings.guardrails.account_cash}
    raw = json.loads(path.read_text())
    nl = float(raw["net_liquidity"])
    positions = pd.DataFrame(raw.get("positions", []))
    book = book_from_frame(positions if len(positions) else None, nl)
    return book, {"source": str(path), "sha256": file_hash(path), "net_liquidity": nl}


def load_episodes(paths: Paths) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    path = state_dir(paths) / "episodes.parquet"
    if not path.is_file():
        return None, {"source": None, "n": 0}
    frame = pd.read_parquet(path)
    return frame, {"source": str(path), "sha256": file_hash(path), "n": int(len(frame))}
