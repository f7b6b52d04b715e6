"""Execution state on disk (all under ``data/state/``, written atomically).

- ``portfolio.json``: the book the daily plan reads (:func:`tasks.state.load_book`):
  ``net_liquidity`` and ``positions`` ``[{symbol, qty, price, bucket, sector, delta, lots}]``,
  plus ``cash``, ``sip_balance``, ``as_of_session`` and per position its stop, take-profit,
  ATR, high/low-water mark and episode (extra keys the plan ignores);
- ``execution/<D>.json``: the working state of session D (cash, holdings with stops and
  high-water marks, working orders, the order in flight, kill switch, counters). It is written
  before every order is sent and after every bar that changed anything, so a restart resumes
  from it (see :mod:`tasks.execution.engine`);
- ``kill_switch.json``: the last session's kill switch (tripped or armed).

All three are read strictly (:mod:`tasks.execution.ledger`: schemas, one-line errors naming the
file and its repair); the session record with a committed status is written last, after the
book, the equity row, the kill switch and the summary (:func:`tasks.execution.outputs.finish`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tasks.execution import ledger
from tasks.io import atomic_write_json
from tasks.paths import Paths
from tasks.settings import AppSettings


@dataclass
class Holding:
    """An open position with its marks and, when the engine opened it, its stops."""

    symbol: str
    qty: int                  # signed: > 0 long, < 0 short
    mark: float               # last price seen
    bucket: str = "core"
    sector: str = "unknown"
    delta: float = 1.0
    lots: int = 1
    entry_price: float | None = None   # average entry
    atr: float | None = None           # ATR in price units at entry (from the plan)
    stop: float | None = None
    take_profit: float | None = None
    extreme: float | None = None       # high-water (long) / low-water (short) mark
    stop_frac: float | None = None     # initial stop distance / entry price (for R)
    episode_id: str | None = None
    entry_session: str | None = None
    entry_ts: str | None = None
    sessions_held: int = 0
    max_qty: int = 0
    entry_fee_left: float = 0.0        # entry fees not yet charged to an exit
    realized: float = 0.0              # net P&L of the episode's exits so far
    exit_qty: int = 0                  # quantity closed so far in the episode
    policy_version: str | None = None
    model_id: str | None = None

    @property
    def side(self) -> str:
        return "BUY" if self.qty > 0 else "SELL"

    @property
    def managed(self) -> bool:
        return self.atr is not None and self.stop is not None


@dataclass
class Working:
    """A parent order worked over bars by immediate-or-cancel children."""

    parent_id: str
    symbol: str
    side: str
    qty: int                  # still to work
    purpose: str              # entry | exit_signal | flatten | timeout
    size_pre: float = 0.0     # planned size, fraction of start-of-day net liquidity
    tags: list[str] = field(default_factory=list)
    atr: float | None = None
    bucket: str = "core"
    sector: str = "unknown"
    filled: int = 0
    plan_price: float | None = None


@dataclass
class SessionState:
    """Everything the engine needs to resume session ``session`` after a restart."""

    session: str
    mode: str
    input_key: str
    start_nl: float
    cash: float
    sip_balance: float = 0.0
    holdings: dict[str, Holding] = field(default_factory=dict)
    working: list[Working] = field(default_factory=list)
    start_values: dict[str, float] = field(default_factory=dict)
    flows: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, str] = field(default_factory=dict)
    status: str = "running"
    bar_index: int = -1
    last_ts: str | None = None
    last_seen: dict[str, str] = field(default_factory=dict)
    halted: bool = False
    kill: dict[str, Any] | None = None
    stalled: bool = False
    applied: list[str] = field(default_factory=list)
    sending: dict[str, Any] | None = None
    counters: dict[str, float] = field(default_factory=lambda: {
        "orders": 0, "fills": 0, "notional": 0.0, "fees": 0.0, "slippage": 0.0})
    clamps_fired: dict[str, int] = field(default_factory=dict)
    episodes: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    recent_trades: list[dict[str, Any]] = field(default_factory=list)
    policy_version: str = ""
    model_id: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    tradelog_anchor: dict[str, Any] | None = None  # the trade log's head at the commit

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SessionState:
        known = {f.name for f in fields(cls)}
        st = cls(**{k: v for k, v in raw.items() if k in known})
        st.holdings = {s: _known(Holding, h) for s, h in raw.get("holdings", {}).items()}
        st.working = [_known(Working, w) for w in raw.get("working", [])]
        return st

    def net_liquidity(self) -> float:
        """Cash plus positions at their marks (the SIP balance is part of the cash)."""
        return self.cash + sum(h.qty * h.mark for h in self.holdings.values())


def _known(cls: type, raw: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in raw.items() if k in names})


def execution_dir(paths: Paths) -> Path:
    return ledger.execution_dir(paths)


def session_state_path(paths: Paths, session: str) -> Path:
    return ledger.record_path(paths, session)


def load_session_state(paths: Paths, session: str) -> SessionState | None:
    """The record of ``session`` (strict: a damaged one raises StateFileError), or None."""
    raw = ledger.read_raw_record(paths, session)
    return SessionState.from_json(raw) if raw is not None else None


def save_session_state(paths: Paths, st: SessionState) -> Path:
    return atomic_write_json(session_state_path(paths, st.session), st.to_json())


@dataclass
class Portfolio:
    """The book between sessions."""

    net_liquidity: float
    cash: float
    holdings: dict[str, Holding]
    sip_balance: float = 0.0
    as_of_session: str | None = None
    source: str = "guardrails.account_cash"


def portfolio_path(paths: Paths) -> Path:
    return ledger.portfolio_path(paths)


def portfolio_of(raw: dict[str, Any], source: str) -> Portfolio:
    """A book in portfolio.json's format (validated) as a :class:`Portfolio`."""
    book = ledger.PortfolioFile.model_validate(raw)
    known = {f.name for f in fields(Holding)}
    holdings = {}
    for p in book.positions:
        row = p.model_dump()
        h = {k: v for k, v in row.items() if k in known}
        holdings[p.symbol] = Holding(**{**h, "qty": int(p.qty), "mark": float(p.price)})
    nl = float(book.net_liquidity)
    cash = float(book.cash if book.cash is not None
                 else nl - sum(h.qty * h.mark for h in holdings.values()))
    return Portfolio(nl, cash, holdings, float(book.sip_balance), book.as_of_session, source)


def load_portfolio(paths: Paths, settings: AppSettings) -> Portfolio:
    """portfolio.json (strict), or the configured account cash with no position on a fresh
    home; missing while sessions were executed: StateFileError (never an empty book)."""
    book = ledger.read_portfolio(paths)
    if book is None:
        cash = settings.guardrails.account_cash
        return Portfolio(cash, cash, {})
    return portfolio_of(book.model_dump(), str(portfolio_path(paths)))


def portfolio_json(st: SessionState) -> dict[str, Any]:
    """The end-of-session book in the format tasks.state.load_book reads (plus extras)."""
    positions = []
    for sym in sorted(st.holdings):
        h = asdict(st.holdings[sym])
        mark = h.pop("mark")
        positions.append({"symbol": sym, "qty": h.pop("qty"), "price": mark, **h})
    return {"net_liquidity": st.net_liquidity(), "cash": st.cash, "sip_balance": st.sip_balance,
            "as_of_session": st.session, "mode": st.mode, "positions": positions}


def save_portfolio(paths: Paths, st: SessionState) -> Path:
    return atomic_write_json(portfolio_path(paths), portfolio_json(st))


def kill_switch_path(paths: Paths) -> Path:
    return ledger.kill_switch_path(paths)


def save_kill_switch(paths: Paths, record: dict[str, Any]) -> Path:
    return atomic_write_json(kill_switch_path(paths), record)


def kill_switch_of(st: SessionState, threshold: float | None = None) -> dict[str, Any]:
    """The kill switch a session leaves: its trip record, or armed for the session."""
    if st.halted and st.kill:
        return st.kill
    return {"session": st.session, "tripped": False,
            "threshold": threshold if threshold is not None else st.info.get("kill_threshold")}


def load_kill_switch(paths: Paths) -> dict[str, Any] | None:
    """The kill switch as it stands (strict; a record that says it tripped wins over a missing
    or older kill_switch.json, see :func:`tasks.execution.ledger.effective_kill_switch`)."""
    ks = ledger.effective_kill_switch(paths)
    return ks if ks.get("session") is not None else None
