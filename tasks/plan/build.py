"""One session's decisions: edges -> gates -> fusion -> expectancy -> sizing -> hard clamps.

Pure functions over small frames; the daily flow and the replay call the same
:func:`decide`. Every scored symbol ends in the audit with the reasons it was or was not taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tasks.models.barrier import barrier_expectancy, relative_to_session
from tasks.plan.expectancy import (
    etth_days,
    expectancy_se,
    lookup,
    second_moment,
    slippage_estimate,
)
from tasks.plan.fusion import Weights, fuse, gate, horizon_edge, percentile_edge
from tasks.plan.sizehint import HintStatus, plan_state
from tasks.plan.sizing import book_risk_scale, score_cash, to_quantity
from tasks.policy import Policy
from tasks.risk.clamps import Book, Order, clamp_batch, classify_bucket, stop_levels
from tasks.settings import AppSettings

PLAN_COLUMNS = ["ticker", "regime", "prob_win_cal", "entry_price", "qty", "position_cash",
                "exp_pnl", "exp_pnl_net", "etth_days", "epnl_time", "action", "score", "stop",
                "take_profit", "bucket", "sector", "reason_tags", "policy_version", "model_id",
                # after the seed's columns: why a BUY with a low P(win) is or is not sensible
                "p_stop", "p_timeout", "exp_r", "exp_pnl_lb", "pct_of_nl"]
CONTEXT_COLUMNS = ["rl_size_hint", "news_sentiment", "put_call_ratio"]


@dataclass
class SessionInputs:
    """Everything one session's decision needs; nothing else is read."""

    as_of: pd.Timestamp
    features: pd.DataFrame          # one row per symbol on as_of
    scores: pd.DataFrame            # symbol, regime, p_raw_<h>, p_cal_<h>
    payoff: dict                    # baseline manifest "payoff"
    thresholds: dict                # baseline manifest "thresholds" (label barriers)
    model_id: str
    policy: Policy                  # blend weights, gates, do-not-trade list, toggles, caps
    policy_version: str
    book: Book
    context: pd.DataFrame | None = None    # symbol + CONTEXT_COLUMNS (any subset)
    returns: pd.DataFrame | None = None    # wide daily log returns up to as_of (effective-K)
    episodes: pd.DataFrame | None = None   # closed episodes (reports; the hint's drawdown state)
    skill: dict | None = None              # baseline manifest "skill" (per-horizon OOS skill)
    size_hint: HintStatus | None = None    # the learned size hint and whether it is used

    def __post_init__(self) -> None:
        if not isinstance(self.policy, Policy):
            raise TypeError(f"SessionInputs.policy must be a Policy, not "
                            f"{type(self.policy).__name__} (tasks.policy.Policy.parse reads one)")


@dataclass
class Decision:
    signals: pd.DataFrame
    plan: pd.DataFrame
    audit: pd.DataFrame
    book: Book
    alerts: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def gated_frame(inp: SessionInputs, settings: AppSettings) -> pd.DataFrame:
    """Per symbol: scores joined with features and context, edges, and the regime gates."""
    f = inp.features
    keep = ["symbol", "date", "sector", "close_raw", "atr_pct", "vol_20", "vol_z",
            "log_dollar_volume", "corr_mkt", "mkt_avg_corr", "market_regime"]
    df = f[[c for c in keep if c in f]].merge(inp.scores, on="symbol", how="inner")
    ctx = inp.context if inp.context is not None else pd.DataFrame({"symbol": []})
    df = df.merge(ctx[["symbol", *[c for c in CONTEXT_COLUMNS if c in ctx]]], on="symbol",
                  how="left")
    for col in CONTEXT_COLUMNS:
        df[col] = df[col].astype("float64") if col in df else np.nan
    cfg = settings.fusion
    for h in ("short", "mid"):
        p_cal = df[f"p_cal_{h}"].to_numpy(dtype="float64")
        rank = _column(df, f"rank_score_{h}")
        if cfg.edge_source == "rank_score" and np.isfinite(rank).any():
            # the ranking model's order within the session; a name without a calibrated
            # probability stays without an edge (HOLD)
            df[f"edge_{h}"] = percentile_edge(np.where(np.isfinite(p_cal), rank, np.nan))
        else:
            base = lookup(inp.payoff[h], df["regime"], "base_rate")
            df[f"edge_{h}"] = horizon_edge(p_cal, base, cfg.edge_mode)
    df["liquidity"] = np.clip(np.exp(df["log_dollar_volume"]) / cfg.liquidity_full_adv_usd, 0, 1)
    df["market_corr"] = df["corr_mkt"]  # the symbol's own correlation with the market
    for col in disabled_columns(inp.policy):
        df[col] = np.nan  # a fusion input the policy switched off counts as absent
    w, _ = blend_weights(inp, settings)
    weights = (Weights.effective(w, rl_available=False) if w.get("short", 0) + w.get("mid", 0) > 0
               else Weights(0.0, 0.0, 1.0))  # RL-only policy: no predictor edge to gate on
    return gate(df, weights, inp.policy.gates)


def blend_weights(inp: SessionInputs, settings: AppSettings) -> tuple[dict[str, float],
                                                                      dict[str, str]]:
    """The policy's blend weights, with a horizon whose ranking had no out-of-sample skill at
    training time set to 0 (``fusion.zero_unskilled_horizons``), and the reason per horizon."""
    w = dict(inp.policy.blend_weights)
    zeroed: dict[str, str] = {}
    if not settings.fusion.zero_unskilled_horizons:
        return w, zeroed
    per = (inp.skill or {}).get("per_horizon") or {}
    need = settings.models.skill.min_ic_t
    for h in ("short", "mid"):
        rec = per.get(h)
        if rec is None or w.get(h, 0.0) <= 0:
            continue
        t = rec.get("ic_t")
        if t is None or not t >= need:
            shown = "n/a" if t is None else f"{t:+.2f}"
            zeroed[h] = (f"weight:{h}=0(no out-of-sample ranking skill: rank IC "
                         f"{_fmt_opt(rec.get('ic'))} Newey-West t {shown} < {need:g})")
            w[h] = 0.0
    return w, zeroed


def _fmt_opt(x) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def fused_frame(df: pd.DataFrame, inp: SessionInputs, settings: AppSettings) -> pd.DataFrame:
    """Fusion score and action, the gated signal, and the expectancy of each symbol."""
    weights, zeroed = blend_weights(inp, settings)
    if weights.get("short", 0) + weights.get("mid", 0) + weights.get("rl", 0) <= 0:
        weights = {"short": 0.0, "mid": 0.0, "rl": 1.0}   # nothing left but the RL hint
    df = _with_size_hint(_expectancy(df, inp, settings), inp, settings)
    df = fuse(df, weights, settings.fusion)
    df["size_mult"] = np.where(np.isfinite(df["hint_mult"]), df["hint_mult"],
                               np.where(df["rl_missing"],
                                        settings.guardrails.rl_missing_size_factor, 1.0))
    if zeroed:  # every name's audit says which horizon was blended at weight 0, and why
        df["penalty_tags"] = [list(tags) + list(zeroed.values()) for tags in df["penalty_tags"]]
    off = {f"{_PENALTY_OF[f]}:unknown": f"{_PENALTY_OF[f]}:disabled"
           for f in inp.policy.disabled_features if f in _PENALTY_OF}
    if off:
        df["penalty_tags"] = [[off.get(t, t) for t in tags] for tags in df["penalty_tags"]]
    df["signal"] = np.select([(df["action"] == "BUY") & df["gate_buy"],
                              (df["action"] == "SELL") & df["gate_sell"]], ["BUY", "SELL"], "HOLD")
    held = df["symbol"].map(lambda s: s in inp.book.positions and inp.book.positions[s].qty > 0)
    df["actionable"] = (df["signal"] == "BUY") | ((df["signal"] == "SELL") & (
        settings.risk.allow_short | held.astype(bool)))
    return df


def _with_size_hint(df: pd.DataFrame, inp: SessionInputs, settings: AppSettings
                    ) -> pd.DataFrame:
    """The size hint's state of every row (tasks/plan/sizehint.py) and, when a learned hint
    is in use, its multiplier ``hint_mult`` and ``rl_size_hint = ln(multiplier)`` for the rows
    the context gave no hint (a context hint is a fusion input only and sizes nothing)."""
    df = plan_state(df, inp.book, inp.episodes, settings)
    df["hint_mult"] = np.nan
    status = inp.size_hint
    if status is not None and status.case == "used" and status.model is not None \
            and "rl_size_hint" not in disabled_columns(inp.policy):
        fill = ~np.isfinite(df["rl_size_hint"].to_numpy(dtype="float64", na_value=np.nan))
        mult = status.model.multipliers(df)
        df["hint_mult"] = np.where(fill, mult, np.nan)
        df["rl_size_hint"] = np.where(fill, np.log(mult), df["rl_size_hint"])
    return df


_PENALTY_OF = {"news_sentiment": "news_negative", "vol_z": "vol_spike", "liquidity": "low_liquidity",
               "corr_mkt": "corr_breakdown"}


def disabled_columns(policy: Policy) -> list[str]:
    """Frame columns blanked by the policy's feature toggles."""
    cols = {"corr_mkt": ["corr_mkt", "market_corr"]}
    return [c for f in policy.disabled_features for c in cols.get(f, [f])]


def signal_frame(inp: SessionInputs, settings: AppSettings) -> pd.DataFrame:
    """Edges -> regime gates -> fusion -> expectancy for every scored symbol."""
    return fused_frame(gated_frame(inp, settings), inp, settings)


def _expectancy(df: pd.DataFrame, inp: SessionInputs, settings: AppSettings) -> pd.DataFrame:
    """Per-symbol expectancy of the plan horizon's barrier trade (tasks/plan/expectancy.py)."""
    h = settings.fusion.plan_horizon
    stats = inp.payoff[h]
    tp, sl = float(inp.thresholds["take_profit_atr"]), float(inp.thresholds["stop_atr"])
    p = df[f"p_cal_{h}"].to_numpy(dtype="float64")
    q = _column(df, f"q_cal_{h}")
    # a baseline without a payoff head: its regime's stop share, and no timeout return
    q = np.where(np.isfinite(q), q, lookup(stats, df["regime"], "p_stop_given_loss"))
    r = np.nan_to_num(_column(df, f"r_cal_{h}"), nan=0.0)
    atr_pct = df["atr_pct"].to_numpy(dtype="float64")
    parts = barrier_expectancy(p, q, r, atr_pct, tp, sl)
    fill, guard = settings.execution.fill, settings.guardrails
    cap_cash = settings.risk.name_cap("core") * inp.book.net_liquidity
    adv = np.exp(df["log_dollar_volume"].to_numpy(dtype="float64"))
    slip = slippage_estimate(atr_pct, np.full(len(df), cap_cash), adv, fill.half_spread_bps,
                             fill.impact_coef, fill.impact_exponent,
                             settings.execution.bar_minutes)
    df["prob_win_cal"] = p
    df["p_stop"], df["p_timeout"] = parts["p_stop"], parts["p_timeout"]
    df["exp_pnl_barrier"] = parts["exp_pnl"]
    # relative to the session: the barrier identity and the ranking score, weighted as they
    # explained realised P&L out of sample (tasks/models/payoff.py; identity alone by default)
    a = np.nan_to_num(_column(df, f"exp_a_{h}"), nan=1.0)
    b = np.nan_to_num(_column(df, f"exp_b_{h}"), nan=0.0)
    rank = pd.Series(_column(df, f"rank_score_{h}")).rank(pct=True).to_numpy()
    rank_term = np.nan_to_num(atr_pct * (rank - 0.5))
    df["exp_pnl"] = a * relative_to_session(parts["exp_pnl"]) + b * rank_term
    df["exp_pnl_net"] = df["exp_pnl"] - 2 * (guard.fee_pct + slip)
    # two sources of uncertainty, independent: the ensemble's disagreement on P(win) through
    # the identity, and the standard error of the ranking score's weight (NaN for a baseline
    # saved without it: the bound is then unknown and no BUY passes it)
    se_id = a * expectancy_se(_column(df, f"p_sd_{h}"), q, r, atr_pct, tp, sl)
    se_b = _column(df, f"exp_b_se_{h}")
    se_b = np.where(b == 0, 0.0, se_b)
    df["exp_pnl_se"] = np.sqrt(se_id ** 2 + (se_b * np.abs(rank_term)) ** 2)
    df["exp_pnl_lb"] = df["exp_pnl_net"] - settings.fusion.expectancy_z * df["exp_pnl_se"]
    with np.errstate(divide="ignore", invalid="ignore"):
        df["exp_r"] = df["exp_pnl_net"] / (sl * atr_pct)
    m2 = second_moment(p, parts["p_stop"], parts["p_timeout"],
                       lookup(stats, df["regime"], "timeout_ret_atr_sq", 1.0), atr_pct, tp, sl)
    with np.errstate(divide="ignore", invalid="ignore"):
        df["kelly_f"] = df["exp_pnl_net"] / m2
    horizon = settings.labels.horizons[h]
    df["etth_days"] = etth_days(atr_pct, df["vol_20"].to_numpy(dtype="float64"), tp, sl, horizon)
    df["epnl_time"] = df["exp_pnl_net"] / df["etth_days"]
    return df


def _column(df: pd.DataFrame, col: str) -> np.ndarray:
    return df[col].to_numpy(dtype="float64", na_value=np.nan) if col in df else np.full(len(df), np.nan)


def _candidates(sig: pd.DataFrame, inp: SessionInputs, settings: AppSettings
                ) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Signals that may become orders, ranked; reasons for every symbol that may not."""
    reasons: dict[str, list[str]] = {s: [] for s in sig["symbol"]}
    risk = settings.risk
    rows = []
    for r in sig.itertuples(index=False):
        why = reasons[r.symbol]
        why.extend(r.penalty_tags)
        if r.signal == "HOLD":
            why.append(_hold_reason(r))
            continue
        held = inp.book.positions.get(r.symbol)
        if r.signal == "SELL" and not risk.allow_short and held is None:
            why.append("sell_signal:no_position_and_shorts_disabled")
            continue
        if r.signal == "BUY" and settings.fusion.expectancy_gate and not r.exp_pnl_lb > 0:
            why.append(f"expectancy:lower bound {r.exp_pnl_lb:+.4%} <= 0 (net {r.exp_pnl_net:+.4%})"
                       if math.isfinite(r.exp_pnl_lb) else
                       "expectancy:lower bound unknown (the baseline has no standard error of its "
                       "ranking weight: retrain it)")
            continue
        adv = math.exp(r.log_dollar_volume) if math.isfinite(r.log_dollar_volume) else math.nan
        bucket = classify_bucket(r.symbol, r.close_raw, adv, risk)
        if bucket is None:
            why.append("bucket:penny_below_min_adv")
            continue
        rows.append({"symbol": r.symbol, "bucket": bucket, "exit": held is not None
                     and r.signal == "SELL" and held.qty > 0})
    cand = pd.DataFrame(rows, columns=["symbol", "bucket", "exit"])
    cand = cand.merge(sig, on="symbol", how="left")
    cand = cand.sort_values(["exit", "epnl_time", "symbol"], ascending=[False, False, True],
                            kind="stable", na_position="last").reset_index(drop=True)
    return cand, reasons


def _hold_reason(r) -> str:
    if not math.isfinite(r.score):
        return "hold:no_score"
    if r.action == "BUY":
        return f"gate:{r.regime} edge {r.gate_edge:.3f} < {r.gate:.2f}"
    if r.action == "SELL":
        return f"gate:{r.regime} edge {r.gate_edge:.3f} > {1 - r.gate:.2f}"
    return f"hold:score {r.score:.3f}"


def _size(cand: pd.DataFrame, inp: SessionInputs, settings: AppSettings
          ) -> tuple[list[Order | None], list[list[str]], dict]:
    """The sizing chain of each entry, one step at a time (README "Sizing"):

    1. conviction: per-name cap x net liquidity x 2|score - 0.5| (the runbook's size);
    2. RL size hint missing: x ``rl_missing_size_factor`` (the runbook's failure mode);
    3. per-trade target: at most ``per_trade_target_pct`` x net liquidity;
    4. Kelly: at most ``kelly_fraction`` x regime scale x f* x net liquidity, with
       f* = exp_pnl_net / E[r^2] from the same probabilities and payoffs as the expectancy;
    5. book risk: every new entry scaled by one factor so the book's one-day 99% VaR stays
       within ``book_var99_max`` (:func:`book_risk_scale`);
    6. whole lots, floored; below one lot or ``min_position_cash``: dropped, never inflated.
    """
    guard, risk, nl = settings.guardrails, settings.risk, inp.book.net_liquidity
    limit = guard.positions_limit(risk, nl)
    room = max(0, limit - len(inp.book.positions))
    entries = cand.loc[~cand["exit"]].head(room)
    symbols = set(entries["symbol"])
    regime = _first(cand, "market_regime")
    kelly_scale = guard.kelly_regime_scale.get(regime or "", 1.0)
    info: dict = {"max_positions": limit, "n_entries_considered": len(symbols),
                  "kelly": f"kelly: {guard.kelly_fraction} x f* x {kelly_scale} ({regime})"}
    cash_of: dict[str, float] = {}
    tags_of: dict[str, list[str]] = {}
    for r in entries.itertuples(index=False):
        t: list[str] = []
        cash = score_cash(r.score, risk.name_cap(r.bucket), nl)
        if math.isfinite(r.hint_mult):
            cash *= r.hint_mult
            t.append(f"size:hint(x{r.hint_mult:g},{inp.size_hint.hint_id})")
        elif r.rl_missing:
            cash *= guard.rl_missing_size_factor
            t.append(f"size:rl_missing(x{guard.rl_missing_size_factor})")
        target = guard.per_trade_target_pct * nl
        if cash > target:
            cash = target
            t.append("size:per_trade_target")
        kelly = guard.kelly_fraction * kelly_scale * max(0.0, float(r.kelly_f)) * nl
        if not math.isfinite(kelly) or cash > kelly:
            cash = kelly if math.isfinite(kelly) else 0.0
            t.append(f"size:kelly_cap(f*={float(r.kelly_f):.3f})")
        cash_of[r.symbol], tags_of[r.symbol] = cash, t
    scale = 1.0
    if guard.book_risk and cash_of and inp.returns is not None:
        scale, risk_info = book_risk_scale(cash_of, inp.book, inp.returns.tail(guard.corr_window),
                                           guard.book_var99_max)
        info.update(risk_info)
    orders, tags = [], []
    for r in cand.itertuples(index=False):
        if r.exit:
            held = inp.book.positions[r.symbol]
            orders.append(Order(r.symbol, "SELL", abs(held.qty), r.close_raw, held.bucket,
                                held.sector))
            tags.append(["exit:sell_signal"])
            continue
        if r.symbol not in symbols:
            orders.append(None)
            tags.append([f"rank:beyond_max_positions({limit})"])
            continue
        t = tags_of[r.symbol]
        cash = cash_of[r.symbol]
        if scale < 1.0:
            cash *= scale
            t.append(f"size:book_risk(x{scale:.3f})")
        qty, why = to_quantity(cash, r.close_raw, guard)
        if why:
            t.append(why)
        orders.append(Order(r.symbol, r.signal, qty, r.close_raw, r.bucket, str(r.sector))
                      if qty else None)
        tags.append(t)
    return orders, tags, info


@dataclass
class Sized:
    """Ranked candidates with their proposed orders (None = not ordered) and reason tags."""

    signals: pd.DataFrame
    candidates: pd.DataFrame
    orders: list[Order | None]
    tags: list[list[str]]
    reasons: dict[str, list[str]]
    info: dict


def size_orders(sig: pd.DataFrame, inp: SessionInputs, settings: AppSettings) -> Sized:
    """Candidates ranked by E[PnL]/time and sized (score, RL, target, Kelly, effective-K)."""
    cand, reasons = _candidates(sig, inp, settings)
    orders, tags, info = _size(cand, inp, settings)
    return Sized(sig, cand, orders, tags, reasons, info)


def apply_clamps(sized: Sized, inp: SessionInputs, settings: AppSettings,
                 health_stop: list[str] | None = None) -> Decision:
    """Run every order through the hard clamps; ``health_stop`` (reasons) empties the plan."""
    sig, reasons, info = sized.signals, sized.reasons, dict(sized.info)
    book = Book(inp.book.net_liquidity, dict(inp.book.positions))
    live = [o for o in sized.orders if o is not None]
    results = [] if health_stop else clamp_batch(live, book, settings.risk, settings.guardrails,
                                                 list(inp.policy.do_not_trade))
    by_symbol = {res.order.symbol: res for res in results}
    plan_rows = []
    for r, order, t in zip(sized.candidates.itertuples(index=False), sized.orders, sized.tags,
                           strict=True):
        res = by_symbol.get(r.symbol)
        t = t + (list(res.tags) if res else [])
        if health_stop and order is not None:
            t.append("health:stop_trading")
        reasons[r.symbol].extend(t)
        if order is not None and res is not None and not res.dropped:
            plan_rows.append(_plan_row(r, res.order, reasons[r.symbol], inp, settings))
    alerts = []
    if sig["rl_missing"].any():
        alerts.append("RL models unavailable—reduced position sizing")
    plan = _plan_frame(plan_rows)
    info.update(weights_used=_weights_info(blend_weights(inp, settings)[0]),
                rl_missing=int(sig["rl_missing"].sum()))
    weights, zeroed = blend_weights(inp, settings)
    info["horizon_weights"] = {"used": weights, "zeroed": zeroed}
    info["empty_book"] = empty_book_info(sig, reasons, plan) or no_edge_info(sig, weights, zeroed)
    if info["empty_book"]:
        alerts.append(info["empty_book"]["message"])
    return Decision(sig, plan, _audit(sig, reasons, plan), book, alerts, info)


# reason-tag prefixes that stop a BUY from becoming an order, in the order the chain applies them
_ZEROING = ("hold:", "gate:", "expectancy:", "bucket:", "rank:", "size:", "clamp:", "health:")
_SIZE_CAPS = ("size:kelly_cap", "size:book_risk", "size:per_trade_target")
_SIZE_LIMITERS = (*_SIZE_CAPS, "size:rl_missing")


def zeroing_step(tags: list[str]) -> str:
    """The step of the chain that left a BUY without an order, from its reason tags.

    A position floored below one lot or the minimum order is named after the last sizing cap
    that shrank it (Kelly, book risk, per-trade target), else the size multiplier (RL hint
    missing), else the floor itself: that is what zeroed it. Gate, hold and expectancy steps
    are named without their figures (``gate:high_vol``, ``expectancy:lower_bound``)."""
    for tag in tags:
        if tag.startswith(("size:below_", "size:no_price")):
            caps = [t.split("(")[0] for t in tags if t.startswith(_SIZE_CAPS)]
            mult = [t.split("(")[0] for t in tags if t.startswith("size:rl_missing")]
            return (caps or mult or [tag.split("(")[0]])[-1]
        if tag.startswith(_ZEROING) and not tag.startswith(_SIZE_LIMITERS):
            if tag.startswith(("gate:", "hold:")):
                return tag.split(" ")[0]
            if tag.startswith("expectancy:"):
                return "expectancy:lower_bound"
            return tag.split("(")[0]
    return "unknown"


def no_edge_info(sig: pd.DataFrame, weights: dict[str, float], zeroed: dict[str, str]
                 ) -> dict | None:
    """No BUY signal at all because every horizon was blended at weight 0 for lack of skill and
    no RL hint exists: the plan cannot trade, and says why (None otherwise)."""
    if not zeroed or weights.get("short", 0) + weights.get("mid", 0) > 0:
        return None
    if (sig["action"] == "BUY").any() or not sig["rl_missing"].all():
        return None
    why = "; ".join(zeroed.values())
    return {"buy_signals": 0, "orders": 0, "step": "weight:no_skilled_horizon",
            "by_step": {"weight:no_skilled_horizon": int(len(sig))},
            "message": f"empty book: no horizon has measured out-of-sample skill, so no name has "
                       f"an edge ({why})"}


def empty_book_info(sig: pd.DataFrame, reasons: dict[str, list[str]], plan: pd.DataFrame
                    ) -> dict | None:
    """When the fusion said BUY for some symbols and none became an order: which step zeroed
    them, with counts (None when there is no BUY signal or at least one BUY order)."""
    buys = sig.loc[sig["action"] == "BUY", "symbol"].tolist()
    if not buys or (plan["action"] == "BUY").any():
        return None
    by_step: dict[str, int] = {}
    for sym in buys:
        step = zeroing_step(reasons.get(sym, []))
        by_step[step] = by_step.get(step, 0) + 1
    by_step = dict(sorted(by_step.items(), key=lambda kv: (-kv[1], kv[0])))
    step = next(iter(by_step))
    detail = ", ".join(f"{k} {v}" for k, v in by_step.items())
    return {"buy_signals": len(buys), "orders": 0, "step": step, "by_step": by_step,
            "message": f"empty book: {len(buys)} BUY signal(s), no order; zeroed by {detail}"}


def decide(inp: SessionInputs, settings: AppSettings, health_stop: list[str] | None = None
           ) -> Decision:
    """Signals, sizing and clamps in one call (the replay's path; the flow runs them as tasks).

    The policy's bucket caps and live changes tighten the risk settings first."""
    from tasks.policy import policy_settings

    settings = policy_settings(settings, inp.policy)
    sized = size_orders(signal_frame(inp, settings), inp, settings)
    return apply_clamps(sized, inp, settings, health_stop)


def _plan_row(r, order: Order, tags: list[str], inp: SessionInputs, settings: AppSettings) -> dict:
    atr_abs = r.atr_pct * r.close_raw
    stop, tp = stop_levels(order.side, order.price, atr_abs, settings.risk)
    return {"ticker": r.symbol, "regime": r.regime, "prob_win_cal": r.prob_win_cal,
            "entry_price": order.price, "qty": int(order.qty),
            "position_cash": order.qty * order.price, "exp_pnl": r.exp_pnl,
            "exp_pnl_net": r.exp_pnl_net, "etth_days": r.etth_days, "epnl_time": r.epnl_time,
            "action": order.side, "score": r.score, "stop": stop, "take_profit": tp,
            "bucket": order.bucket, "sector": order.sector, "reason_tags": ";".join(tags),
            "policy_version": inp.policy_version, "model_id": inp.model_id,
            "p_stop": r.p_stop, "p_timeout": r.p_timeout, "exp_r": r.exp_r,
            "exp_pnl_lb": r.exp_pnl_lb,
            "pct_of_nl": order.qty * order.price / inp.book.net_liquidity}


def _plan_frame(rows: list[dict]) -> pd.DataFrame:
    plan = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    plan["qty"] = plan["qty"].astype("int64")
    for col in ("ticker", "regime", "action", "bucket", "sector", "reason_tags",
                "policy_version", "model_id"):
        plan[col] = plan[col].astype("string")
    return plan.sort_values(["epnl_time", "ticker"], ascending=[False, True], kind="stable",
                            na_position="last").reset_index(drop=True)


def _audit(sig: pd.DataFrame, reasons: dict[str, list[str]], plan: pd.DataFrame) -> pd.DataFrame:
    """One row per scored symbol. ``action`` is the plan's decision for the name, the gated
    ``signal``; ``score_action`` is what the fusion score alone said before the regime gate (a
    score pushed into the SELL zone by risk penalties or the RL hint while the predictors' edge
    stays neutral is SELL there and HOLD here); ``action_note`` is the reason tag that explains a
    difference: the gate that held a scored side, or the step that left a signal without an
    order."""
    cols = ["symbol", "date", "sector", "regime", "p_cal_short", "p_cal_mid", "edge_short",
            "edge_mid", "gate_edge", "gate", "score", "action", "signal", "p_stop", "p_timeout",
            "exp_pnl_barrier", "exp_pnl_net", "exp_pnl_se", "exp_pnl_lb", "exp_r", "kelly_f",
            "epnl_time"]
    audit = sig[cols].rename(columns={"action": "score_action"})
    audit.insert(audit.columns.get_loc("signal"), "action", audit["signal"])
    taken = set(plan["ticker"])
    audit["taken"] = audit["symbol"].isin(taken)
    audit["action_note"] = pd.array(
        [_action_note(r.action, r.score_action, r.taken, reasons.get(r.symbol, []))
         for r in audit.itertuples(index=False)], dtype="string")
    audit["reasons"] = [";".join(reasons.get(s, [])) for s in audit["symbol"]]
    audit["reasons"] = audit["reasons"].astype("string")
    return audit.sort_values("symbol", kind="stable").reset_index(drop=True)


def _action_note(action: str, score_action: str, taken: bool, tags: list[str]) -> str | None:
    """The tag saying why the score's side was not the action, or why an action has no order."""
    if taken:
        return None
    if action == "HOLD":
        gate_tag = next((t for t in tags if t.startswith("gate:")), None)
        return f"score {score_action}; {gate_tag}" if score_action != "HOLD" and gate_tag else None
    stop = next((t for t in tags if t.startswith(("sell_signal:", "expectancy:", "bucket:",
                                                  "rank:", "health:"))), None)
    floor = next((t.split("(")[0] for t in tags if t.startswith(("size:below_", "size:no_price"))),
                 None)
    if stop is None and floor:
        bound = zeroing_step(tags)
        stop = floor if bound == floor else f"{floor} after {bound}"
    if stop is None:
        stop = next((t for t in reversed(tags) if t.startswith("clamp:")), "unknown")
    return f"{action} signal, no order: {stop}"


def _weights_info(weights: dict[str, float]) -> dict:
    """The blend weights used (after a horizon without skill was set to 0), with and without
    the RL hint."""
    full = Weights.effective(weights, True) if sum(weights.values()) > 0 else Weights(0, 0, 0)
    pred = (Weights.effective(weights, False) if weights.get("short", 0) + weights.get("mid", 0) > 0
            else Weights(0.0, 0.0, 0.0))
    return {"with_rl": full.__dict__, "predictors_only": pred.__dict__}


def _first(df: pd.DataFrame, col: str):
    vals = df[col].dropna() if col in df else pd.Series([], dtype=object)
    return str(vals.iloc[0]) if len(vals) else None
