"""Seeded synthetic daily US large-cap market in the vendor format (raw OHLC, adjusted close)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.data.calendar import sessions
from tasks.io import atomic_write

SECTORS = (
    "Information Technology", "Financials", "Health Care", "Industrials",
    "Consumer Discretionary", "Communication Services", "Consumer Staples", "Energy",
    "Materials", "Utilities", "Real Estate",
)
_SECTOR_WORDS = (
    "Systems", "Bancorp", "Therapeutics", "Industries", "Brands", "Media",
    "Foods", "Petroleum", "Chemicals", "Power", "Realty",
)
_NAME_WORDS = (
    "Apex", "Blue Ridge", "Cedar", "Delta", "Evergreen", "Falcon", "Granite", "Harbor",
    "Ironwood", "Juniper", "Keystone", "Lakeshore", "Meridian", "Northgate", "Orion",
    "Pinnacle", "Quarry", "Redwood", "Summit", "Tidewater", "Union", "Vanguard",
)
_SUFFIXES = ("Inc.", "Corp.", "Holdings", "Group", "Co.", "plc")
BAR_COLUMNS = (
    "symbol", "date", "open", "high", "low", "close",
    "adjusted_close", "volume", "dividend_amount", "split_coefficient",
)
REGIMES = ("calm", "normal", "stressed")
DEFECT_KINDS = (
    "stale_symbol", "unexplained_split", "high_below_low", "close_outside_range",
    "non_positive_price", "negative_volume", "duplicate_row", "conflicting_duplicate",
    "missing_session",
)
_TRANSITION = np.array([[0.985, 0.015, 0.0], [0.010, 0.980, 0.010], [0.0, 0.030, 0.970]])
_STATIONARY = np.array([1 / 3, 1 / 2, 1 / 6])
_DAY = np.sqrt(252.0)
_MKT_VOL = np.array([0.09, 0.15, 0.34]) / _DAY
_MKT_DRIFT = np.array([0.15, 0.06, -0.25]) / 252
_SECTOR_SCALE = np.array([0.8, 1.0, 1.4])
_SECTOR_VOL = 0.10 / _DAY
_FORWARD_K = np.array([2.0, 3.0, 4.0, 5.0, 7.0, 10.0])
_REVERSE_K = np.array([0.5, 0.25, 0.2, 0.1])
_QUARTER = 63
_STALE_SESSIONS = 15
_VALUE_DEFECTS = ("high_below_low", "close_outside_range", "non_positive_price", "negative_volume")
Rng = np.random.Generator
Array = np.ndarray


# the demo's planted cross-sectional signal: each name's idiosyncratic return gives back this
# share of the mean of its last 5 idiosyncratic shocks (a short-term reversal, the anomaly with
# the strongest daily record); 0 gives a market in which nothing is predictable
REVERSAL = 0.2


@dataclass(frozen=True)
class DemoSpec:
    """Size, period, seed and dirtiness of the demo market."""

    seed: int = 7
    n_symbols: int = 60
    n_sectors: int = 10
    start: str = "2017-01-03"
    end: str = "2024-12-31"
    inject_bad_rows: bool = True
    reversal: float = REVERSAL


@dataclass(frozen=True)
class DemoMarket:
    """Vendor-format bars, constituents, the injected defects and the market regime path."""

    bars: pd.DataFrame
    constituents: pd.DataFrame
    injected: pd.DataFrame
    regimes: pd.Series


def _sessions(start: str, end: str) -> pd.DatetimeIndex:
    """NYSE sessions from start to end as tz-naive datetime64[us]."""
    days = sessions("XNYS", start, end)
    return pd.DatetimeIndex(days.as_unit("us"), name="date", freq=None)


def _check_spec(spec: DemoSpec, n_days: int) -> None:
    """Raise ValueError for specs the generator cannot honour."""
    if not 1 <= spec.n_sectors <= min(len(SECTORS), spec.n_symbols):
        raise ValueError(f"n_sectors must be in 1..{min(len(SECTORS), spec.n_symbols)}")
    if spec.n_symbols < 2 or n_days < 2 * _QUARTER:
        raise ValueError("need at least 2 symbols and 126 sessions")
    if not 0 <= spec.reversal <= 1:
        raise ValueError("reversal must be in 0..1")


def _tickers(rng: Rng, n: int) -> Array:
    """Unique, sorted 3-4 letter tickers."""
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    draws = letters[rng.integers(0, 26, size=(4 * n + 50, 4))]
    lengths = rng.integers(3, 5, size=len(draws))
    words = ["".join(row[:k]) for row, k in zip(draws, lengths, strict=True)]
    return np.sort(pd.unique(np.array(words))[:n])


def _constituents(rng: Rng, tickers: Array, n_sectors: int) -> tuple:
    """Constituents frame and each symbol's sector code."""
    n = len(tickers)
    chosen = rng.permutation(len(SECTORS))[:n_sectors]
    codes = rng.permutation(np.arange(n) % n_sectors)
    first = rng.choice(_NAME_WORDS, size=n)
    suffix = rng.choice(_SUFFIXES, size=n)
    sector_idx = chosen[codes]
    parts = zip(first, sector_idx, suffix, strict=True)
    names = [f"{w} {_SECTOR_WORDS[s]} {x}" for w, s, x in parts]
    frame = pd.DataFrame({
        "symbol": pd.array(tickers, dtype="str"),
        "name": pd.array(names, dtype="str"),
        "sector": pd.array(np.array(SECTORS)[sector_idx], dtype="str"),
    })
    return frame, codes


def _regime_path(rng: Rng, n_days: int) -> Array:
    """A 3-state Markov chain of market regimes (0 calm, 1 normal, 2 stressed)."""
    u = rng.random(n_days)
    cum = np.cumsum(_TRANSITION, axis=1)
    states = np.empty(n_days, dtype=np.int64)
    state = min(int(np.searchsorted(np.cumsum(_STATIONARY), u[0], side="right")), 2)
    for t in range(n_days):
        state = min(int(np.searchsorted(cum[state], u[t], side="right")), 2)
        states[t] = state
    return states


def _student(rng: Rng, shape: tuple[int, int]) -> Array:
    """Unit-variance Student-t(5) shocks, clipped at 8 sigma."""
    return np.clip(rng.standard_t(5, size=shape) * np.sqrt(3 / 5), -8, 8)


def _garch_unit(z: Array, a: Array, b: Array) -> Array:
    """Unit-mean GARCH(1,1) variance multipliers for shock columns z."""
    coef = a * z**2 + b
    g = np.empty_like(z)
    g[0] = 1.0
    for t in range(1, len(z)):
        g[t] = (1 - a - b) + g[t - 1] * coef[t - 1]
    return g


def _reversal(shocks: Array, strength: float, window: int = 5) -> Array:
    """Shocks minus ``strength`` x the mean of each column's previous ``window`` shocks."""
    if strength == 0:
        return shocks
    csum = np.vstack([np.zeros((1, shocks.shape[1])), np.cumsum(shocks, axis=0)])
    t = np.arange(len(shocks))
    past = (csum[t] - csum[np.maximum(t - window, 0)]) / window
    return shocks - strength * past


def _log_returns(rng: Rng, regimes: Array, codes: Array, reversal: float = 0.0) -> tuple:
    """Factor-model daily log returns and each day's conditional volatility, both (T, N); the
    idiosyncratic part carries the planted short-term reversal (no extra random draws)."""
    n_days, n = len(regimes), len(codes)
    beta, gamma = rng.uniform(0.6, 1.4, n), rng.uniform(0.5, 1.5, n)
    idio = np.clip(rng.lognormal(np.log(0.22), 0.35, n), 0.10, 0.50) / _DAY
    alpha = rng.normal(0.03, 0.03, n) / 252
    a, b = rng.uniform(0.03, 0.07, n + 1), rng.uniform(0.86, 0.91, n + 1)
    a[0], b[0] = 0.09, 0.89
    z = _student(rng, (n_days, n + 1))
    g = _garch_unit(z, a, b)
    mkt_sd = _MKT_VOL[regimes] * np.sqrt(g[:, 0])
    market = _MKT_DRIFT[regimes] + mkt_sd * z[:, 0]
    sec_sd = _SECTOR_VOL * _SECTOR_SCALE[regimes]
    sectors = sec_sd[:, None] * rng.standard_normal((n_days, codes.max() + 1))
    idio_sd = idio * np.sqrt(g[:, 1:])
    idio_part = _reversal(idio_sd * z[:, 1:], reversal)
    r = alpha + beta * market[:, None] + gamma * sectors[:, codes] + idio_part
    var = (beta * mkt_sd[:, None]) ** 2 + (gamma * sec_sd[:, None]) ** 2 + idio_sd**2
    return r, np.sqrt(var)


def _first_sessions(rng: Rng, n_days: int, n: int) -> Array:
    """Index of each symbol's first session: about 10% list mid-sample."""
    first = np.zeros(n, dtype=np.int64)
    ipo = rng.choice(n, size=max(1, round(0.1 * n)), replace=False)
    first[ipo] = rng.integers(int(0.15 * n_days), int(0.7 * n_days), size=len(ipo))
    return first


def _pick_k(price: Array, choices: Array, target: float) -> Array:
    """Split ratio from choices that brings each price closest to target."""
    gap = np.abs(np.log(price[:, None] / choices[None, :] / target))
    return choices[gap.argmin(axis=1)]


def _split_grid(rng: Rng, level: Array, first: Array) -> Array:
    """(T, N) split coefficients: forward splits on high-priced names, one reverse split."""
    n_days, n = level.shape
    n_fwd = max(1, n // 15)
    forward = np.argsort(-level.max(axis=0), kind="stable")[:n_fwd]
    low = np.argsort(level.min(axis=0), kind="stable")
    reverse = low[~np.isin(low, forward)][:1]
    syms = np.concatenate([forward, reverse])
    life = n_days - first[syms]
    day = first[syms] + ((0.2 + 0.7 * rng.random(len(syms))) * life).astype(np.int64)
    price = level[day, syms]
    k = np.concatenate([_pick_k(price[:n_fwd], _FORWARD_K, 120.0),
                        _pick_k(price[n_fwd:], _REVERSE_K, 40.0)])
    grid = np.ones((n_days, n))
    grid[day, syms] = k
    return grid


def _dividend_yields(rng: Rng, first: Array, splits: Array) -> Array:
    """(T, N) quarterly dividend yields on ex-dates, else 0."""
    n_days, n = splits.shape
    payers = (first == 0) & (rng.random(n) < 0.8)
    yq = rng.uniform(0.005, 0.04, n) / 4
    phase = rng.integers(5, _QUARTER, n)
    t = np.arange(n_days)[:, None]
    ex = ((t - phase) % _QUARTER == 0) & (t > first) & payers & (splits == 1.0)
    return np.where(ex, yq, 0.0)


def _adjust_factor(close: Array, dividends: Array, splits: Array) -> Array:
    """Vendor adjustment factor: 1 on the last date, stepping back at each split/ex-date."""
    prev = np.vstack([close[:1], close[:-1]])
    cut = np.divide(dividends, prev, out=np.zeros_like(close), where=dividends > 0)
    ratio = (1.0 - cut) / splits
    tail = np.cumprod(ratio[::-1], axis=0)[::-1]
    return np.vstack([tail[1:], np.ones((1, close.shape[1]))])


def _cents(x: Array) -> Array:
    """Round to cents, never below one cent."""
    return np.maximum(np.round(x, 2), 0.01)


def _prices(rng: Rng, r: Array, sigma: Array, first: Array) -> dict:
    """Raw OHLC, dividends, splits and adjusted close as (T, N) arrays."""
    n_days, n = r.shape
    live = np.arange(n_days)[:, None] > first
    r = np.where(live, r, 0.0)
    level = np.exp(rng.uniform(np.log(10), np.log(400), n) + np.cumsum(r, axis=0))
    splits = _split_grid(rng, level, first)
    yq = _dividend_yields(rng, first, splits)
    raw = level * np.cumprod(1.0 - yq, axis=0) / np.cumprod(splits, axis=0)
    close = _cents(raw)
    prev = np.vstack([close[:1], close[:-1]])
    dividends = np.where(yq > 0, np.maximum(np.round(yq * prev, 2), 0.01), 0.0)
    opened = _cents(raw * np.exp(-r + 0.3 * sigma * rng.standard_normal(r.shape)))
    wick = 0.6 * sigma * np.abs(rng.standard_normal((2, n_days, n)))
    top, bottom = np.maximum(opened, close), np.minimum(opened, close)
    high = np.maximum(_cents(top * np.exp(wick[0])), top)
    low = np.minimum(_cents(bottom * np.exp(-wick[1])), bottom)
    adjusted = np.round(close * _adjust_factor(close, dividends, splits), 6)
    return {"open": opened, "high": high, "low": low, "close": close, "adjusted_close": adjusted,
            "dividend_amount": dividends, "split_coefficient": splits}


def _volume(rng: Rng, r: Array, sigma: Array, splits: Array) -> Array:
    """(T, N) integer share volume, heavier on large-move days, scaled by splits."""
    base = rng.lognormal(np.log(3e6), 0.8, r.shape[1])
    surprise = np.clip(np.abs(r) / sigma, 0, 6) - 0.8
    noise = 0.3 * rng.standard_normal(r.shape)
    shares = base * np.exp(noise + 0.35 * surprise) * np.cumprod(splits, axis=0)
    return np.maximum(np.round(shares), 100).astype(np.int64)


def _to_long(panel: dict, tickers: Array, sessions: pd.DatetimeIndex, first: Array) -> pd.DataFrame:
    """Flatten (T, N) arrays into bars sorted by (symbol, date)."""
    live = (np.arange(len(sessions))[:, None] >= first).T
    dates = np.broadcast_to(sessions.to_numpy()[None, :], live.shape)[live]
    cols = {"symbol": pd.array(np.repeat(tickers, live.sum(axis=1)), dtype="str"), "date": dates}
    for name in BAR_COLUMNS[2:]:
        cols[name] = panel[name].T[live]
    bars = pd.DataFrame(cols, columns=list(BAR_COLUMNS))
    bars["volume"] = pd.array(bars["volume"].to_numpy(), dtype="Int64")
    return bars


def _event_free(bars: pd.DataFrame, rows: Array) -> Array:
    """Mask of rows that are neither split nor dividend days."""
    sub = bars.loc[rows]
    return ((sub["dividend_amount"] == 0) & (sub["split_coefficient"] == 1.0)).to_numpy()


def _target_row(bars: pd.DataFrame, kind: str, rows: Array, rng: Rng) -> int | None:
    """Row label to damage for one kind, or None when this symbol cannot host it."""
    if kind == "stale_symbol":
        clean_tail = _event_free(bars, rows[-_STALE_SESSIONS:]).all()
        return int(rows[-_STALE_SESSIONS - 1]) if clean_tail else None
    mid = rows[len(rows) // 5: 4 * len(rows) // 5]
    ok = mid[_event_free(bars, mid) & (bars.loc[mid, "high"] > bars.loc[mid, "low"]).to_numpy()]
    return int(rng.choice(ok)) if len(ok) else None


def _damage_value(bars: pd.DataFrame, kind: str, row: int, rng: Rng) -> str:
    """Corrupt one value of one row in place; return the detail."""
    at = bars.loc[row]
    if kind == "high_below_low":
        bars.loc[row, ["high", "low"]] = [at["low"], at["high"]]
        return f"high {at['low']:.2f} < low {at['high']:.2f}"
    if kind == "close_outside_range":
        bars.loc[row, "close"] = new = round(at["high"] + max(0.01, 0.03 * at["high"]), 2)
        return f"close {new:.2f} > high {at['high']:.2f}"
    if kind == "non_positive_price":
        bars.loc[row, "open"] = new = 0.0 if rng.random() < 0.5 else -at["open"]
        return f"open {new:.2f}"
    bars.loc[row, "volume"] = -at["volume"]
    return f"volume {-at['volume']}"


def _damage(bars: pd.DataFrame, kind: str, rows: Array, row: int, rng: Rng) -> tuple:
    """Apply one defect in place; return (detail, labels to drop, rows to append)."""
    if kind in _VALUE_DEFECTS:
        return _damage_value(bars, kind, row, rng), [], None
    dup = bars.loc[[row]].copy()
    if kind == "duplicate_row":
        return "exact duplicate row appended", [], dup
    if kind == "conflicting_duplicate":
        dup["close"] = new = round(float(dup["close"].iloc[0]) * 1.02 + 0.01, 2)
        return f"second row with close {new:.2f}", [], dup
    if kind == "missing_session":
        return "session row deleted", [row], None
    if kind == "stale_symbol":
        detail = f"bars stop {_STALE_SESSIONS} sessions before the last session"
        return detail, list(rows[-_STALE_SESSIONS:]), None
    return _halve_from(bars, rows[rows >= row]), [], None


def _halve_from(bars: pd.DataFrame, rows: Array) -> str:
    """Unrecorded 2:1 split: halve prices and dividends, double volume, keep split_coefficient."""
    for col in ("open", "high", "low", "close"):
        bars.loc[rows, col] = _cents(bars.loc[rows, col].to_numpy() / 2)
    for col in ("adjusted_close", "dividend_amount"):
        bars.loc[rows, col] = np.round(bars.loc[rows, col].to_numpy() / 2, 6)
    bars.loc[rows, "volume"] = bars.loc[rows, "volume"] * 2
    return "raw OHLC and adjusted_close halved from here on, split_coefficient 1.0"


def _inject(bars: pd.DataFrame, rng: Rng, exclude: set) -> tuple:
    """Inject one defect of each kind on distinct symbols; return (bars, injected)."""
    groups = {str(s): np.asarray(v) for s, v in bars.groupby("symbol", sort=True).indices.items()}
    pool = [s for s in rng.permutation(sorted(groups)) if s not in exclude]
    drops, extra, records = [], [], []
    for kind in DEFECT_KINDS:
        for sym in pool:
            row = _target_row(bars, kind, groups[sym], rng)
            if row is None:
                continue
            detail, dropped, added = _damage(bars, kind, groups[sym], row, rng)
            drops += dropped
            extra += [] if added is None else [added]
            records.append((sym, bars.at[row, "date"], kind, detail))
            pool.remove(sym)
            break
    bars = pd.concat([bars.drop(index=drops), *extra])
    bars = bars.sort_values(["symbol", "date"], kind="stable").reset_index(drop=True)
    return bars, _injected_frame(records)


def _injected_frame(records: list) -> pd.DataFrame:
    """Frame of injected defects: symbol, date, kind, detail."""
    frame = pd.DataFrame(records, columns=["symbol", "date", "kind", "detail"])
    for col in ("symbol", "kind", "detail"):
        frame[col] = frame[col].astype("str")
    frame["date"] = pd.to_datetime(frame["date"]).astype("datetime64[us]")
    return frame


def generate_demo_market(spec: DemoSpec = DemoSpec()) -> DemoMarket:
    """Generate the seeded synthetic market described by spec."""
    sessions = _sessions(spec.start, spec.end)
    _check_spec(spec, len(sessions))
    rng = np.random.default_rng(spec.seed)
    tickers = _tickers(rng, spec.n_symbols)
    constituents, codes = _constituents(rng, tickers, spec.n_sectors)
    regimes = _regime_path(rng, len(sessions))
    r, sigma = _log_returns(rng, regimes, codes, spec.reversal)
    first = _first_sessions(rng, len(sessions), spec.n_symbols)
    panel = _prices(rng, r, sigma, first)
    panel["volume"] = _volume(rng, r, sigma, panel["split_coefficient"])
    bars = _to_long(panel, tickers, sessions, first)
    split_syms = set(bars.loc[bars["split_coefficient"] != 1.0, "symbol"])
    injected = _injected_frame([])
    if spec.inject_bad_rows:
        bars, injected = _inject(bars, rng, split_syms)
    labels = pd.array(np.array(REGIMES)[regimes], dtype="str")
    path = pd.Series(labels, index=sessions, name="regime")
    return DemoMarket(bars=bars, constituents=constituents, injected=injected, regimes=path)


def write_demo_market(market: DemoMarket, folder: Path) -> dict[str, Path]:
    """Write ohlcv_daily.parquet, constituents.csv and injected_defects.csv; return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "bars": folder / "ohlcv_daily.parquet",
        "constituents": folder / "constituents.csv",
        "injected": folder / "injected_defects.csv",
    }
    table = pa.Table.from_pandas(market.bars, preserve_index=False)
    atomic_write(paths["bars"], lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    atomic_write(paths["constituents"], lambda tmp: market.constituents.to_csv(
        tmp, index=False, lineterminator="\n"))
    atomic_write(paths["injected"], lambda tmp: market.injected.to_csv(
        tmp, index=False, lineterminator="\n", date_format="%Y-%m-%d"))
    return paths
