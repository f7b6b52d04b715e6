"""Write one session's outputs: dated archives plus the runbook's "latest" copies.

For session D:

- ``data/daily/<D>/signals_with_gates.parquet`` (every scored symbol: probabilities, edges,
  gates, score, action, expectancy) and ``shadow_signals.parquet`` when a shadow model exists;
- ``val/plans/<D>/trade_plan.csv`` and ``trade_plan_audit.parquet`` (every candidate and why
  it was or was not taken);
- ``reports/health/daily_health_<D>.json`` and ``reports/daily/<D>.html`` (the analyst's report:
  totals, market context, a funnel from scored symbols to orders, reasons in words, exposure
  against its caps; :func:`render_report`);
- the latest copies ``data/daily/signals_with_gates.parquet``, ``val/trade_plan.csv`` and
  ``val/trade_plan_audit.parquet``, refreshed only when D is not older than the last latest.

Every file is written atomically and only when its bytes change; nothing depends on the clock.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment

from tasks.io import atomic_write, atomic_write_json, atomic_write_parquet
from tasks.paths import Paths


def plan_csv_bytes(plan: pd.DataFrame) -> bytes:
    """The trade plan as CSV (fixed float format, LF line ends)."""
    return plan.to_csv(index=False, lineterminator="\n", float_format="%.6f").encode()


def _signals_for_disk(signals: pd.DataFrame) -> pd.DataFrame:
    out = signals.copy()
    out["penalty_tags"] = [";".join(t) for t in out["penalty_tags"]]
    for col in ("penalty_tags", "action", "signal", "symbol", "regime", "sector"):
        if col in out:
            out[col] = out[col].astype("string")
    return out


def output_paths(paths: Paths, day: str) -> dict[str, Path]:
    return {
        "signals": paths.data / "daily" / day / "signals_with_gates.parquet",
        "shadow": paths.data / "daily" / day / "shadow_signals.parquet",
        "plan": paths.val / "plans" / day / "trade_plan.csv",
        "audit": paths.val / "plans" / day / "trade_plan_audit.parquet",
        "health": paths.reports / "health" / f"daily_health_{day}.json",
        "report": paths.reports / "daily" / f"{day}.html",
    }


def latest_paths(paths: Paths) -> dict[str, Path]:
    return {"signals": paths.data / "daily" / "signals_with_gates.parquet",
            "plan": paths.val / "trade_plan.csv",
            "audit": paths.val / "trade_plan_audit.parquet"}


def write_session(paths: Paths, day: str, signals: pd.DataFrame, plan: pd.DataFrame,
                  audit: pd.DataFrame, health: dict[str, Any], shadow: pd.DataFrame | None
                  ) -> dict[str, Path]:
    """Write the dated files, then the latest copies; returns every path written.

    The set becomes visible as a whole through its run record (``reports/runs/daily_<D>.json``,
    which the caller writes last with every output's sha256): the record is marked
    ``writing`` here before the first output is replaced, so a reader (the intraday run, see
    :func:`tasks.execution.ledger.plan_commit_problem`) never takes a half-written set for the
    committed one. Leftovers of killed writes (``.tmp-*``) are removed first: all of them in
    the session's own folders, those older than a minute in the folders other sessions share."""
    from tasks.io import fault_point
    from tasks.statefiles import remove_temp_files

    where = output_paths(paths, day)
    own = {where["plan"].parent, where["signals"].parent}
    for folder in {p.parent for p in [*where.values(), *latest_paths(paths).values()]}:
        remove_temp_files(folder, older_than_s=0.0 if folder in own else 60.0)
    atomic_write_json(paths.runs / f"daily_{day}.json", {"writing": True, "session": day})
    written = {"signals": atomic_write_parquet(where["signals"], _signals_for_disk(signals))}
    fault_point("daily_outputs")
    written["plan"] = atomic_write(where["plan"], lambda t: t.write_bytes(plan_csv_bytes(plan)))
    fault_point("daily_outputs")
    written["audit"] = atomic_write_parquet(where["audit"], audit)
    fault_point("daily_outputs")
    written["health"] = atomic_write_json(where["health"], health)
    fault_point("daily_outputs")
    html = render_report(day, plan, health, audit, session_config(paths, health))
    written["report"] = atomic_write(where["report"], lambda t: t.write_text(html))
    if shadow is not None:
        written["shadow"] = atomic_write_parquet(where["shadow"], shadow)
    marker = paths.data / "daily" / "latest.json"
    last = json.loads(marker.read_text())["date"] if marker.is_file() else ""
    if day >= last:
        for key, target in latest_paths(paths).items():
            data = written[key].read_bytes()
            atomic_write(target, lambda t, d=data: t.write_bytes(d))
            written[f"latest_{key}"] = target
            fault_point("daily_outputs")
        atomic_write_json(marker, {"date": day})
    return written



# --------------------------------------------------------------------------- the daily report
#
# ``reports/daily/<D>.html``: what an analyst reads before the open. Totals first (cash deployed,
# gross exposure, risk at stop), then the market context, a funnel from scored symbols to orders
# whose counts add up, the orders with their reasons in words, the main rejections, and the
# exposure drawn against its caps. Every number goes through :func:`fmt`.

# kind -> (scale, format); one place decides how each kind of number is shown
FORMATS = {
    "pct_nl": (100.0, "{:.2f}%"),      # a share of net liquidity: exposure, cash, risk, caps
    "prob": (100.0, "{:.1f}%"),        # a probability, or a share of names
    "ret": (100.0, "{:+.3f}%"),        # an expected return per trade, signed
    "mkt_ret": (100.0, "{:+.2f}%"),    # a market return over weeks, signed
    "usd": (1.0, "${:,.0f}"),          # cash
    "price": (1.0, "{:,.2f}"),         # a price
    "z": (1.0, "{:+.2f}"),             # a z-score (standard deviations)
    "corr": (1.0, "{:.2f}"),           # a correlation
    "r": (1.0, "{:+.2f}"),             # a multiple R of the initial risk (entry - stop)
    "score": (1.0, "{:.2f}"),          # the fusion score, 0..1
    "int": (1.0, "{:,.0f}"),           # a count or a quantity
}


def fmt(value: Any, kind: str) -> str:
    """A number as the report shows it (``n/a`` for a missing or non-finite value)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(v):
        return "n/a"
    scale, spec = FORMATS[kind]
    return spec.format(v * scale)


# reason code (from the audit's and the plan's reason tags) -> words; the one table
REASON_WORDS = {
    "hold:no_score": "no score: a calibrated probability is missing",
    "hold:score": "fusion score between the SELL and BUY thresholds: no side taken",
    "gate:buy": "BUY score not confirmed: the predictors' edge is below the regime gate",
    "gate:sell": "SELL score not confirmed: the predictors' edge is not low enough for the "
                 "regime gate (risk penalties or the RL hint pulled the score down)",
    "sell_signal:no_position_and_shorts_disabled":
        "SELL signal on a name not held, and shorts are disabled",
    "expectancy:lower_bound": "lower bound of expectancy ≤ 0 after costs",
    "bucket:penny_below_min_adv": "penny stock below the minimum average dollar volume",
    "rank:beyond_max_positions": "ranked beyond the maximum number of positions",
    "size:conviction": "the conviction size (per-name cap × 2 |score − 0.5|)",
    "size:rl_missing": "halving for the missing RL size hint",
    "size:hint": "the learned size hint's multiplier",
    "size:per_trade_target": "the per-trade cash target",
    "size:kelly_cap": "the fractional-Kelly cap",
    "size:book_risk": "the book-risk scaling (one-day 99% VaR limit)",
    "size:below_one_lot": "less than one lot",
    "size:below_min_position_cash": "less than the minimum order",
    "size:no_price": "no price to size with",
    "size:lot_floor": "the whole-lot floor",
    "clamp:per_name": "the per-name cap",
    "clamp:single_ticker": "the single-ticker cap",
    "clamp:bucket": "the bucket capital cap",
    "clamp:sector": "the sector cap",
    "clamp:top5": "the top-5 concentration cap",
    "clamp:do_not_trade": "on the do-not-trade list",
    "clamp:no_short": "a short while shorts are disabled",
    "clamp:max_positions": "the book already holds the most positions",
    "clamp:max_per_ticker": "the name already holds the most lots",
    "clamp:no_net_liquidity": "no net liquidity",
    "clamp:non_positive_qty": "no quantity",
    "clamp:no_flip": "an exit larger than the position (cut to the position)",
    "health:stop_trading": "the health check stopped trading",
    "exit:sell_signal": "exit of a held long on a SELL signal",
    "penalty:vol_spike": "volatility spike",
    "penalty:news_negative": "negative news",
    "penalty:low_liquidity": "low liquidity",
    "penalty:corr_breakdown": "correlation breakdown with the market",
    "unknown": "not explained by the audit",
}
# the sizing steps that can bind an order, in the order the chain applies them (a hard clamp
# that cuts it afterwards is said on its own: "cut by the sector cap")
_BINDING = ("size:per_trade_target", "size:kelly_cap", "size:book_risk")
_LIMIT_CLAMPS = ("clamp:per_name", "clamp:single_ticker", "clamp:bucket", "clamp:sector",
                 "clamp:top5")


def words(code: str) -> str:
    return REASON_WORDS.get(code, code)


def _tags(text: Any) -> list[str]:
    return [t for t in str(text).split(";") if t] if isinstance(text, str) else []


def stop_code(tags: list[str], taken: bool) -> str | None:
    """The code of the step that kept a scored symbol out of the plan (None when taken)."""
    from tasks.plan.build import zeroing_step

    if taken:
        return None
    for t in tags:
        if t.startswith("hold:"):
            return "hold:no_score" if t.startswith("hold:no_score") else "hold:score"
        if t.startswith("gate:"):
            return "gate:sell" if " > " in t else "gate:buy"
        if t.startswith(("sell_signal:", "bucket:", "rank:")):
            return t.split("(")[0]
        if t.startswith("expectancy:"):
            return "expectancy:lower_bound"
    if "health:stop_trading" in tags:
        return "health:stop_trading"
    if any(t.startswith(("size:below_", "size:no_price")) for t in tags):
        return zeroing_step(tags)
    clamps = [t.split("(")[0] for t in tags if t.startswith("clamp:")]
    return clamps[-1] if clamps else "unknown"


# the funnel: (key, label, the prefixes of the stop codes that leave at this step)
FUNNEL = [
    ("scored", "Scored symbols", ()),
    ("side", "Fusion score takes a side", ("hold:",)),
    ("signals", "Confirmed by the regime gate (signals)", ("gate:",)),
    ("actionable", "Actionable: BUY, or SELL on a held long", ("sell_signal:",)),
    ("candidates", "Pass the expectancy and bucket rules", ("expectancy:", "bucket:")),
    ("ranked", "Within the position limit", ("rank:",)),
    ("sized", "Sized above zero", ("size:",)),
    ("orders", "Orders after the risk clamps", ("clamp:", "health:", "unknown")),
]


def _leave_words(code: str) -> str:
    if code.startswith("size:") and code not in ("size:below_one_lot",
                                                  "size:below_min_position_cash", "size:no_price"):
        return f"sized below one lot or the minimum order by {words(code)}"
    if code in ("size:below_one_lot", "size:below_min_position_cash"):
        return f"sized to {words(code)}"
    if code in _LIMIT_CLAMPS:
        return f"dropped by {words(code)}"
    return words(code)


def funnel(audit: pd.DataFrame, config: dict) -> list[dict]:
    """Each step's count, its BUY/SELL split and who left there, by reason (counts add up)."""
    side_col = "score_action" if "score_action" in audit else "action"
    rows = audit.assign(code=[stop_code(_tags(r), bool(t)) for r, t in
                              zip(audit["reasons"], audit["taken"], strict=True)])
    alive = pd.Series(True, index=rows.index)
    out = []
    for key, label, prefixes in FUNNEL:
        leave = alive & rows["code"].fillna("").str.startswith(prefixes or ("\0",))
        counts = rows.loc[leave, "code"].value_counts()
        dropped = sorted(((c, int(n)) for c, n in counts.items()), key=lambda kv: (-kv[1], kv[0]))
        alive = alive & ~leave
        direction = rows[side_col] if key == "side" else rows["signal"]
        kept = direction[alive]
        split = key != "scored"
        out.append({"key": key, "label": label, "count": int(alive.sum()),
                    "left": int(leave.sum()),
                    "buy": int((kept == "BUY").sum()) if split else "",
                    "sell": int((kept == "SELL").sum()) if split else "",
                    "dropped": [{"code": c, "n": n, "words": _leave_words(c)}
                                for c, n in dropped]})
    out[1]["note"] = (f"BUY at score ≥ {config['buy_threshold']:.2f}, SELL at score ≤ "
                      f"{config['sell_threshold']:.2f}")
    out[3]["note"] = ("shorts allowed: every SELL signal is actionable" if config["allow_short"]
                      else "shorts disabled: a SELL only exits a held long")
    return out


def rejections(audit: pd.DataFrame) -> list[dict]:
    """Why the scored names that are not in the plan were not ordered: counts by the first step
    that stopped them (they add up to scored - orders)."""
    rows = audit.loc[~audit["taken"].astype(bool)]
    counts: dict[str, int] = {}
    for text in rows["reasons"]:
        code = stop_code(_tags(text), False) or "unknown"
        counts[code] = counts.get(code, 0) + 1
    return [{"code": c, "n": n, "words": _leave_words(c)}
            for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def coverage_line(cov: dict[str, Any], config: dict[str, Any]) -> str:
    """The health report's coverage in words, with the SELL signals that are not actionable."""
    n, scored, buy, sell = (int(cov[k]) for k in ("signals_count", "scored", "buy", "sell"))
    pct = fmt(cov["coverage_pct"] / 100, "prob") if cov["coverage_pct"] is not None else "n/a"
    lo, hi = cov["band_pct"]
    text = (f"{n} actionable signal{'' if n == 1 else 's'} out of {scored} scored symbols: "
            f"{pct} (band {lo:.0f}–{hi:.0f}%). ")
    exits = n - buy
    if config["allow_short"]:
        return text + f"They are {buy} BUY and {sell} SELL signals (shorts allowed)."
    text += f"They are {buy} BUY signal{'' if buy == 1 else 's'}"
    text += f" and {exits} SELL signal{'' if exits == 1 else 's'} on held longs" if exits else ""
    idle = sell - exits
    if idle:
        text += (f"; the other {idle} SELL signal{'' if idle == 1 else 's'} "
                 f"{'is' if idle == 1 else 'are'} not actionable: no position is held and "
                 "shorts are disabled")
    return text + "."


def _risk_at_stop(plan: pd.DataFrame) -> pd.Series:
    """qty x |entry - stop| per order; 0 for an exit (it closes risk, it does not add any)."""
    risk = (plan["qty"].astype("float64") * (plan["entry_price"] - plan["stop"]).abs())
    return risk.where(~_exits(plan), 0.0)


def _exits(plan: pd.DataFrame) -> pd.Series:
    return plan["reason_tags"].fillna("").astype(str).str.contains("exit:sell_signal",
                                                                    regex=False)


def totals(plan: pd.DataFrame, health: dict[str, Any]) -> dict[str, Any]:
    nl = float(health["net_liquidity"])
    exp = health["metrics"]["exposure"]
    sizing = health.get("sizing") or {}
    exits = _exits(plan)
    deployed = float(plan.loc[~exits, "position_cash"].sum())
    released = float(plan.loc[exits, "position_cash"].sum())
    risk = float(_risk_at_stop(plan).sum())
    gross = exp.get("gross")
    share = (lambda v: v / nl) if nl > 0 else (lambda v: math.nan)
    return {"orders": len(plan), "entries": int((~exits).sum()), "exits": int(exits.sum()),
            "deployed": deployed, "deployed_pct": share(deployed), "released": released,
            "risk": risk, "risk_pct": share(risk),
            "gross_pct": gross, "gross_usd": gross * nl if isinstance(gross, float) else None,
            "positions": exp.get("n_positions"),
            "var99": sizing.get("book_var99"), "var99_max": sizing.get("book_var99_max"),
            "effective_k": sizing.get("effective_k")}


def _size_words(tags: list[str]) -> str:
    """Which sizing step bound the order, in words, and what shrank it on the way."""
    bound = [t for t in tags if t.startswith(_BINDING)]
    code = bound[-1].split("(")[0] if bound else "size:conviction"
    text = f"size: {words(code)}" if code == "size:conviction" else f"size bound by {words(code)}"
    if code == "size:kelly_cap":
        f = bound[-1].partition("f*=")[2].rstrip(")")
        text += f" (f* {f})" if f else ""
    if code == "size:book_risk":
        text += f" (× {bound[-1].partition('(x')[2].rstrip(')')})"
    if any(t.startswith("size:rl_missing") for t in tags) and code != "size:rl_missing":
        text += f", after {words('size:rl_missing')}"
    hint = [t for t in tags if t.startswith("size:hint(")]
    if hint:
        text += f", × {hint[-1].partition('(x')[2].split(',')[0]} by the learned size hint"
    return text


def order_reasons(plan: pd.DataFrame, audit: pd.DataFrame | None, health: dict[str, Any]
                  ) -> list[str]:
    """One sentence per order: why this name, and what sized it."""
    rank_of: dict[str, int] = {}
    n_cand = 0
    if audit is not None and len(audit):
        codes = [stop_code(_tags(r), bool(t)) for r, t in zip(audit["reasons"], audit["taken"],
                                                              strict=True)]
        reached = pd.Series([c is None or c.startswith(("rank:", "size:", "clamp:", "health:"))
                             for c in codes], index=audit.index)
        reached &= ~audit["reasons"].fillna("").str.contains("exit:sell_signal", regex=False)
        cand = audit.loc[reached].sort_values(["epnl_time", "symbol"], ascending=[False, True],
                                              na_position="last")
        rank_of = {s: i + 1 for i, s in enumerate(cand["symbol"])}
        n_cand = len(cand)
    market = (health["metrics"].get("regime") or {}).get("market_regime")
    kelly = (health.get("sizing") or {}).get("kelly") or ""
    scale = kelly.rsplit(" x ", 1)[-1].split(" ")[0] if " x " in kelly else None
    out = []
    for r in plan.itertuples(index=False):
        tags = _tags(r.reason_tags)
        if "exit:sell_signal" in tags:
            exit_words = words("exit:sell_signal")
            out.append(f"{exit_words[:1].upper()}{exit_words[1:]}; the whole position is sold.")
            continue
        parts = [f"Expected {fmt(r.exp_pnl_net, 'ret')} per trade net of costs "
                 f"({fmt(r.exp_r, 'r')} R), lower bound {fmt(r.exp_pnl_lb, 'ret')} > 0",
                 f"P(take-profit) {fmt(r.prob_win_cal, 'prob')} against P(stop) "
                 f"{fmt(r.p_stop, 'prob')}, the rest ({fmt(r.p_timeout, 'prob')}) times out"]
        if r.ticker in rank_of:
            parts.append(f"ranked {rank_of[r.ticker]} of {n_cand} candidates by expected P&L "
                         f"per day")
        regime = f"fusion score {fmt(r.score, 'score')}; {r.regime} name"
        if market:
            regime += f" in a {market} market" + (f" (Kelly × {scale})" if scale else "")
        parts.append(regime)
        pens = [words(t) for t in tags if t.startswith("penalty:")]
        if pens:
            parts.append("penalised for " + ", ".join(pens))
        parts.append(_size_words(tags))
        cut = [words(t.split("(")[0]) for t in tags if t.startswith("clamp:")]
        if cut:
            parts[-1] += ", cut by " + ", ".join(cut)
        out.append("; ".join(parts) + ".")
    return out


def cap_bars(rows: list[tuple[str, float, float | None]], kind: str = "pct_nl") -> str:
    """Horizontal bars, each drawn against its own cap: the track runs to 125% of the cap, the
    cap is a marked line, a bar over its cap is red. ``rows``: (name, value, cap or None for a
    share of 100%). Inline SVG with deterministic text."""
    if not rows:
        return "<p>(none)</p>"
    x0, track, step = 190, 300, 22
    parts = []
    for i, (name, value, cap) in enumerate(rows):
        y = step * i
        v = value if isinstance(value, (int, float)) and math.isfinite(value) else 0.0
        full = 1.25 * cap if cap else 1.0
        width = track * min(max(v, 0.0), full) / full
        over = cap is not None and v > cap + 1e-12
        label = f"{fmt(v, kind)}"
        if cap:
            label += f" of cap {fmt(cap, kind)} ({fmt(v / cap, 'prob')} used)"
        parts.append(
            f'<g class="capbar" data-name="{_esc(name)}" data-value="{v:.6f}" '
            f'data-cap="{"" if cap is None else f"{cap:.6f}"}">'
            f'<text x="0" y="{y + 14}">{_esc(name)}</text>'
            f'<rect class="track" x="{x0}" y="{y + 4}" width="{track}" height="12" '
            f'fill="#eee"/>'
            f'<rect class="use" x="{x0}" y="{y + 4}" width="{width:.1f}" height="12" '
            f'fill="{"#c33" if over else "#4a7"}"/>')
        if cap:
            xc = x0 + track / 1.25
            parts.append(f'<line class="cap" x1="{xc:.1f}" x2="{xc:.1f}" y1="{y + 1}" '
                         f'y2="{y + 19}" stroke="#b00" stroke-width="2"/>')
        parts.append(f'<text x="{x0 + track + 8}" y="{y + 14}">{label}</text></g>')
    height = step * len(rows) + 4
    return (f'<svg class="bars" viewBox="0 0 720 {height}" width="720" height="{height}" '
            f'role="img">' + "".join(parts) + "</svg>")


def report_config(risk: Any = None, fusion: Any = None, features: Any = None) -> dict[str, Any]:
    """The limits and thresholds the report draws against (defaults: the configured defaults)."""
    from tasks.settings import FeatureSettings
    from tasks.trading_settings import BUCKETS, FusionSettings, RiskSettings

    risk, fusion = risk or RiskSettings(), fusion or FusionSettings()
    features = features or FeatureSettings()
    return {"caps": {"bucket": {b: risk.cap(b) for b in BUCKETS},
                     "sector": risk.single_sector_max, "top5": risk.top5_max,
                     "single_ticker": risk.single_ticker_max},
            "buy_threshold": fusion.buy_threshold, "sell_threshold": fusion.sell_threshold,
            "allow_short": risk.allow_short, "corr_window": features.corr_window,
            "vol_window": features.vol_window, "zscore_window": features.zscore_window}


def session_config(paths: Paths, health: dict[str, Any]) -> dict[str, Any]:
    """:func:`report_config` of the settings in force, with the session's policy's limits."""
    from tasks.policy import load_version, policy_settings
    from tasks.settings import load_settings

    settings = load_settings()
    try:
        policy = load_version(paths, settings, str(health.get("policy_version")))
    except FileNotFoundError:
        policy = None
    settings = policy_settings(settings, policy)
    return report_config(settings.risk, settings.fusion, settings.features)


def market_context(health: dict[str, Any], config: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, value, what it means) for the market figures the health report carries."""
    m = health["metrics"].get("regime") or {}
    ret = m.get("mkt_ret_20")
    rows = [("Market regime", str(m.get("market_regime") or "n/a"),
             "trending, ranging or volatile: the equal-weight market's moving averages and ATR; "
             "it scales the Kelly cap"),
            ("Market volatility z", fmt(m.get("mkt_vol_z"), "z"),
             f"{config['vol_window']}-session volatility of the equal-weight market against its "
             f"{config['zscore_window']}-session mean, in standard deviations"),
            ("Breadth", fmt(m.get("mkt_breadth_50"), "prob"),
             "share of names closing above their 50-session average"),
            ("Cross-sectional correlation", fmt(m.get("mkt_avg_corr"), "corr"),
             f"average pairwise correlation of daily returns over {config['corr_window']} "
             "sessions"),
            ("Market return, 20 sessions",
             fmt(math.expm1(ret) if isinstance(ret, (int, float)) else None, "mkt_ret"),
             "equal-weight market")]
    return rows


REPORT = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Daily plan {{ day }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.45em; margin-bottom: .2em; } h2 { font-size: 1.1em; margin: 1.3em 0 .4em;
  border-bottom: 1px solid #ddd; } .meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: .82em; }
th, td { border: 1px solid #ccc; padding: 2px 5px; text-align: right; vertical-align: top; }
th { background: #eee; } td.l, th.l { text-align: left; }
.ERROR { color: #fff; background: #b00; } .WARNING { background: #fd6; } .OK { background: #9d9; }
.status { padding: 2px 8px; font-weight: bold; } svg text { font-size: 11px; }
svg.bars { max-width: 100%; height: auto; }
.empty-book { color: #b00; border: 1px solid #b00; padding: 4px 8px; }
.kpis { display: flex; flex-wrap: wrap; gap: .6em; margin: .5em 0; padding: 0; }
.kpi { border: 1px solid #ccc; border-radius: 4px; padding: .4em .8em; min-width: 11em; margin: 0; }
.kpi dt { font-size: .8em; color: #555; } .kpi dd { margin: 0; font-size: 1.25em; font-weight: 600; }
.kpi .sub { font-size: .75em; color: #555; font-weight: normal; display: block; }
#plan { width: 100%; } #plan tr.why td { text-align: left; color: #333; background: #fafafa; font-size: .95em;
  border-top: 0; }
#funnel td.change { color: #555; } #funnel ul { margin: 0; padding-left: 1.1em; }
.legend { font-size: .8em; color: #555; }
@page { size: auto; margin: 12mm; }
@media print {
  body { margin: 0; max-width: none; font-size: 9pt; }
  h2 { break-after: avoid; page-break-after: avoid; }
  table { width: 100%; font-size: 7.5pt; page-break-inside: auto; }
  th, td { padding: 1px 3px; }
  td { white-space: nowrap; }
  td.l, td.w, tr.why td, #funnel td, #context td { white-space: normal; }
  thead { display: table-header-group; }
  tr { break-inside: avoid; page-break-inside: avoid; }
  .kpis, svg, #context, #funnel { break-inside: avoid; page-break-inside: avoid; }
  .kpi { min-width: 9em; }
  .status { border: 1px solid #000; }
  a { color: inherit; text-decoration: none; }
}
</style></head><body>
<h1>Pre-market plan for the session after {{ day }}</h1>
<p class="meta"><span class="status {{ status }}">{{ status }}</span>
 net liquidity {{ fmt(nl, "usd") }} &middot; model {{ model }} &middot; policy {{ policy }}
{% if size_hint %}&middot; <span id="size-hint">size hint {{ size_hint }}</span>{% endif %}</p>
{% if errors %}<h2>Stop trading</h2><ul>{% for e in errors %}<li>{{ e }}</li>{% endfor %}</ul>
<p>The plan holds no orders.</p>{% endif %}
{% if empty_book %}<p class="empty-book"><b>{{ empty_book }}</b></p>{% endif %}
{% if warnings %}<h2>Warnings</h2><ul>{% for w in warnings %}<li>{{ w }}</li>{% endfor %}</ul>{% endif %}

<h2>At a glance</h2>
<dl class="kpis" id="totals">
<div class="kpi"><dt>Orders</dt>
<dd id="total-orders" data-value="{{ t.orders }}">{{ t.orders }}<span class="sub">
{{ t.entries }} new entr{{ "y" if t.entries == 1 else "ies" }},
{{ t.exits }} exit{{ "" if t.exits == 1 else "s" }}</span></dd></div>
<div class="kpi"><dt>Cash deployed</dt>
<dd id="total-cash" data-value="{{ t.deployed }}">{{ fmt(t.deployed, "usd") }}<span class="sub"
 id="total-cash-pct">{{ fmt(t.deployed_pct, "pct_nl") }} of net liquidity{% if t.exits %};
exits release {{ fmt(t.released, "usd") }}{% endif %}</span></dd></div>
<div class="kpi"><dt>Gross exposure after the plan</dt>
<dd id="total-gross" data-value="{{ t.gross_pct }}">{{ fmt(t.gross_pct, "pct_nl") }}<span
 class="sub">{{ fmt(t.gross_usd, "usd") }} in {{ t.positions }}
position{{ "" if t.positions == 1 else "s" }}</span></dd></div>
<div class="kpi"><dt>Risk at stop</dt>
<dd id="total-risk" data-value="{{ t.risk }}">{{ fmt(t.risk, "usd") }}<span class="sub"
 id="total-risk-pct">{{ fmt(t.risk_pct, "pct_nl") }} of net liquidity if every new entry
stops out</span></dd></div>
{% if t.var99 is not none %}<div class="kpi"><dt>Book one-day 99% VaR</dt>
<dd id="total-var">{{ fmt(t.var99, "pct_nl") }}<span class="sub">limit
{{ fmt(t.var99_max, "pct_nl") }}; {{ fmt(t.effective_k, "score") }} effective independent
bets</span></dd></div>{% endif %}
</dl>

<h2>Market context</h2>
<table id="context">{% for name, value, means in context %}<tr><th class="l">{{ name }}</th>
<td class="value">{{ value }}</td><td class="l">{{ means }}</td></tr>{% endfor %}
<tr><th class="l">Volatility regimes of the scored names</th><td class="value">{{ regime_mix }}</td>
<td class="l">share of names in each volatility regime (each has its own gate and calibrator)</td></tr>
</table>

<h2>From scored symbols to orders</h2>
<table id="funnel"><thead><tr><th class="l">step</th><th>count</th><th>BUY</th><th>SELL</th>
<th class="l">left at this step</th></tr></thead><tbody>
{% for s in funnel %}<tr class="step" data-step="{{ s.key }}" data-count="{{ s.count }}"
 data-left="{{ s.left }}">
<td class="l">{{ s.label }}{% if s.note %}<br><small>{{ s.note }}</small>{% endif %}</td>
<td class="count">{{ s.count }}</td><td>{{ s.buy }}</td><td>{{ s.sell }}</td>
<td class="l change">{% if s.dropped %}&minus;{{ s.left }}:<ul>{% for d in s.dropped %}
<li data-n="{{ d.n }}">{{ d.words }}: {{ d.n }}</li>{% endfor %}</ul>
{%- elif not loop.first %}none{% endif %}</td></tr>
{% endfor %}</tbody></table>
{% if not funnel %}<p>(no audit for this session)</p>{% endif %}

<h2>Trade plan ({{ plan_rows|length }} order{{ "" if plan_rows|length == 1 else "s" }})</h2>
<table id="plan"><thead><tr>{% for c, k in plan_cols %}<th class="{{ k }}">{{ c }}</th>{% endfor %}
</tr></thead><tbody>
{% for row, why in plan_rows %}<tr class="order">{% for v in row -%}
<td class="{{ plan_cols[loop.index0][1] }}">{{ v }}</td>{% endfor %}</tr>
<tr class="why"><td colspan="{{ plan_cols|length }}"><b>Why:</b> {{ why }}</td></tr>
{% endfor %}</tbody></table>

<h2>Why the other names were not ordered</h2>
{% if rejections %}<table id="rejections">
<thead><tr><th class="l">reason</th><th>names</th></tr></thead><tbody>
{% for r in rejections %}<tr data-code="{{ r.code }}" data-n="{{ r.n }}"><td class="l">{{ r.words }}</td>
<td>{{ r.n }}</td></tr>{% endfor %}
</tbody></table>
<p class="legend">Every scored name that is not in the plan, by the first step that stopped it
({{ rejections|sum(attribute="n") }} names = scored − orders).</p>
{% else %}<p id="rejections">Every scored name became an order.</p>{% endif %}

<h2>Exposure against its caps</h2>
<p class="legend">Each bar is drawn against its own cap (the red mark); the track runs to 125% of the cap.</p>
<div id="exposure-bucket"><h3>By bucket</h3>{{ bucket_chart }}</div>
<div id="exposure-sector"><h3>By sector</h3>{{ sector_chart }}</div>
<div id="exposure-concentration"><h3>Concentration</h3>{{ conc_chart }}</div>

<h2>Coverage</h2>
<p id="coverage">{{ coverage }}</p>

{% if esc %}<h2>Escalation</h2>
<p>Policy {{ esc.policy_before }} &rarr; {{ esc.policy_after }}.</p>
<table><tr><th class="l">trigger</th><th class="l">call type</th><th>threshold</th><th>fired</th>
<th>evaluable</th></tr>
{% for t in esc.triggers %}<tr><td class="l">{{ t.name }}</td><td class="l">{{ t.call_type }}</td>
<td>{{ t.threshold }}</td>
<td>{{ t.fired }}</td><td>{{ t.evaluable }}</td></tr>{% endfor %}</table>
<ul>{% for c in esc.calls %}<li>{{ c.call_type }}: {{ c.status }} ({{ c.backend or "no backend" }}),
{{ c.clipped }} clipped, {{ c.rejected }} rejected</li>{% else %}<li>no call</li>{% endfor %}</ul>{% endif %}

<p class="legend">Formats: shares of net liquidity with 2 decimals, probabilities and shares of
names with 1, expected returns per trade with 3 (signed, % of the position), cash in whole dollars;
R is a multiple of the risk to the stop (entry − stop).
Cash deployed is the cash of the new entries; risk at stop is quantity × (entry − stop) summed over
them; gross exposure is the whole book after the plan.</p>
</body></html>
"""


def bar_chart(values: dict[str, float], fmt: str = "{:.1%}") -> str:
    """A small horizontal bar chart as inline SVG (deterministic text), scaled to its largest
    value (the operator dashboard's; the daily report draws against caps: :func:`cap_bars`)."""
    if not values:
        return "<p>(none)</p>"
    top = max(max(values.values()), 1e-12)
    rows = []
    for i, (name, v) in enumerate(values.items()):
        width = 300 * (v / top if math.isfinite(v) else 0)
        rows.append(f'<text x="0" y="{18 * i + 13}">{_esc(name)}</text>'
                    f'<rect x="160" y="{18 * i + 3}" width="{width:.1f}" height="12" '
                    f'fill="#4a7"/><text x="{165 + width:.1f}" y="{18 * i + 13}">'
                    f'{fmt.format(v)}</text>')
    return (f'<svg width="560" height="{18 * len(values) + 6}" role="img">' + "".join(rows)
            + "</svg>")


def _esc(text: str) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def render_report(day: str, plan: pd.DataFrame, health: dict[str, Any],
                  audit: pd.DataFrame | None = None, config: dict[str, Any] | None = None) -> str:
    """The daily HTML report of session ``day`` (``audit``: the funnel, the rejections and the
    candidates' ranks; ``config``: :func:`report_config`, the configured defaults when None)."""
    from markupsafe import Markup

    from tasks.health.checks import empty_book_line

    config = config or report_config()
    caps = config["caps"]
    m, s = health["metrics"], health["summary"]
    exp = m["exposure"]
    cov = m["coverage"]
    table = plan.assign(risk_at_stop=_risk_at_stop(plan), p_outcomes=list(zip(
        plan["prob_win_cal"], plan["p_stop"], plan["p_timeout"], strict=True)))
    shown = [(c, h, f) for c, h, f in PLAN_TABLE if c in table]
    cols = [(h, "l" if c in _TEXT_COLUMNS else "w" if c == "p_outcomes" else "")
            for c, h, _ in shown]
    cells = [[f(v) for (_, _, f), v in zip(shown, r, strict=True)]
             for r in table[[c for c, _, _ in shown]].itertuples(index=False)]
    rows = list(zip(cells, order_reasons(plan, audit, health), strict=True))
    has_audit = audit is not None and len(audit) > 0
    steps = funnel(audit, config) if has_audit else []
    regime_mix = ", ".join(f"{k} {fmt(v / 100, 'prob')}"
                           for k, v in m["regime"]["regime_distribution"].items()) or "n/a"
    buckets = [(b, exp.get("by_bucket", {}).get(b, 0.0), caps["bucket"][b])
               for b in caps["bucket"]]
    sectors = [(k, v, caps["sector"]) for k, v in exp.get("by_sector", {}).items()]
    conc = [("top-5 names", exp.get("top5"), caps["top5"]),
            ("largest name", exp.get("largest_name"), caps["single_ticker"])]
    return Environment(autoescape=True).from_string(REPORT).render(
        day=day, status=s["status"], errors=s["errors"], warnings=s["warnings"], fmt=fmt,
        nl=health["net_liquidity"], model=health.get("model", {}).get("active"),
        policy=health.get("policy_version"), plan_cols=cols, plan_rows=rows, cov=cov,
        cov_pct=fmt(cov["coverage_pct"] / 100, "prob") if cov["coverage_pct"] is not None
        else "n/a", t=totals(plan, health), context=market_context(health, config),
        regime_mix=regime_mix, funnel=steps, rejections=rejections(audit) if has_audit else [],
        coverage=coverage_line(cov, config),
        bucket_chart=Markup(cap_bars(buckets)), sector_chart=Markup(cap_bars(sectors)),
        conc_chart=Markup(cap_bars(conc)),
        esc=health["escalation"] if (health.get("escalation") or {}).get("enabled") else None,
        empty_book=empty_book_line(health.get("empty_book")),
        size_hint=size_hint_line(health.get("size_hint")))


def size_hint_line(status: dict[str, Any] | None) -> str | None:
    """The size hint's case for the report's header: ``used (id)``, ``not used: why`` or
    ``missing (RL-missing sizing)``; None when the health does not record it."""
    if not status or not status.get("case"):
        return None
    if status["case"] == "used":
        return f"used ({status.get('hint_id')})"
    if status["case"] == "missing":
        return "missing: sizes halved (the runbook's RL-missing mode)"
    return f"not used, sizes halved: {status.get('reason')}"


def _as(kind: str) -> Any:
    return lambda v: fmt(v, kind)


_TEXT_COLUMNS = ("ticker", "action", "bucket", "sector")
# the analyst's table: (plan column, header, format); the reasons follow each order in words
PLAN_TABLE = [("ticker", "ticker", str), ("action", "side", str), ("qty", "qty", _as("int")),
              ("entry_price", "entry", _as("price")), ("stop", "stop", _as("price")),
              ("take_profit", "take profit", _as("price")),
              ("position_cash", "cash", _as("usd")), ("pct_of_nl", "% of NL", _as("pct_nl")),
              ("risk_at_stop", "risk at stop", _as("usd")),
              ("p_outcomes", "P(take-profit / stop / timeout)",
               lambda v: " / ".join(fmt(x, "prob") for x in v)),
              ("exp_pnl_net", "exp. net", _as("ret")), ("exp_pnl_lb", "exp. lower bound", _as("ret")),
              ("exp_r", "exp. R", _as("r")),
              ("bucket", "bucket", str), ("sector", "sector", str)]
