"""The backtest's tearsheet: one HTML page with PNG charts beside it.

``<folder>/tearsheet.html`` reads top down: the verdict of the promotion gates (when given) and
the headline figures next to the benchmark's, the caveats (survivorship, notes), the gates
table, then the charts (growth and drawdown against the benchmark, monthly returns, rolling
Sharpe, exposure and turnover, cumulative costs, R-multiples) and the tables by year, by
volatility regime and by policy version. Every figure comes from :mod:`tasks.backtest.analytics`
and every number is shown through :func:`show`. Text is escaped; charts are drawn with
matplotlib's Agg canvas and saved without timestamps or software tags, so the same backtest
writes the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from jinja2 import Environment
from matplotlib.figure import Figure

from tasks.backtest import analytics as an
from tasks.io import atomic_write
from tasks.numbers import json_number
from tasks.plan.outputs import FORMATS as REPORT_FORMATS
from tasks.plan.outputs import fmt as report_fmt

DPI = 100
STRATEGY_COLOR, BENCHMARK_COLOR = "#1f5fa8", "#8a8a8a"
CHARTS = {  # key -> file beside tearsheet.html
    "equity": "equity_drawdown.png",
    "monthly": "monthly_returns.png",
    "rolling": "rolling_sharpe.png",
    "exposure": "exposure_turnover.png",
    "costs": "costs.png",
    "r_multiples": "r_multiples.png",
}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_RC = {"font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3,
       "axes.spines.top": False, "axes.spines.right": False}

# the tearsheet's kinds of number; a kind the daily report also uses keeps its format there
TEARSHEET_FORMATS = {
    "ratio": (1.0, "{:+.2f}"),      # Sharpe, Sortino
    "rate": (1.0, "{:.2f}"),        # escalations per session
    "level": (1.0, "{:,.1f}"),      # a value of the growth of 100
    "general": (1.0, "{:,.4g}"),    # a gate's value or threshold of no declared kind
}


def show(value: Any, kind: str) -> str:
    """A number as the tearsheet shows it (``n/a`` when missing or not finite). Kinds: those of
    the daily report (``mkt_ret`` signed return, ``pct_nl`` share, ``prob`` probability,
    ``usd``, ``int``, ``r`` R-multiple) and ``ratio``, ``rate``, ``level``, ``general``."""
    if kind in REPORT_FORMATS:
        return report_fmt(value, kind)
    v = json_number(value)
    if v is None:
        return "n/a"
    scale, spec = TEARSHEET_FORMATS[kind]
    return spec.format(v * scale)


# (key, label, kind) of the figures shown for the strategy and the benchmark
RETURN_ROWS = (("total_return", "Total return", "mkt_ret"), ("cagr", "CAGR", "mkt_ret"),
               ("sharpe", "Sharpe ratio", "ratio"), ("sortino", "Sortino ratio", "ratio"),
               ("volatility", "Volatility (annualised)", "pct_nl"),
               ("max_drawdown", "Maximum drawdown", "pct_nl"))
ACTIVITY_ROWS = (("trades", "Closed trades", "int"), ("hit_rate", "Hit rate (P&L > 0)", "prob"),
                 ("avg_r", "Average R-multiple", "r"),
                 ("turnover", "Turnover per session (of net liquidity)", "pct_nl"),
                 ("exposure", "Mean gross exposure (of net liquidity)", "pct_nl"),
                 ("costs_total", "Costs paid (fees and spread)", "usd"),
                 ("kill_switch_days", "Sessions with the kill switch on", "int"),
                 ("escalations_per_day", "Escalations per session", "rate"),
                 ("sessions", "Sessions", "int"))
GROUPINGS = (("year", "by-year", "By year"), ("vol_regime", "by-regime", "By volatility regime"),
             ("policy_version", "by-policy", "By policy version"))
SURVIVORSHIP = ("Survivorship bias: the universe is the list of names known today, so names "
                "that were delisted, merged away or went bankrupt during the backtest are "
                "missing from it. Returns, the hit rate and the drawdown are likely better here "
                "than they would have been live; read them as an upper bound.")


# --------------------------------------------------------------------------- charts


def _save(fig: Figure, path: Path) -> Figure:
    atomic_write(path, lambda t: fig.savefig(t, format="png", dpi=DPI,
                                             metadata={"Software": None}))
    return fig


def _pct_axis(ax: Any) -> None:
    from matplotlib.ticker import PercentFormatter

    # decimals=None: as many as the tick spacing needs (no "1%, 1%, 2%" on a small range)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))


def _equity_chart(daily: pd.DataFrame, path: Path) -> Figure:
    fig = Figure(figsize=(10, 5.2))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for col, label, color in (("returns", "Strategy", STRATEGY_COLOR),
                              ("benchmark_returns", "Benchmark (equal weight)", BENCHMARK_COLOR)):
        if col not in daily:
            continue
        g, dd = an.growth(daily[col]), an.drawdown(daily[col])
        top.plot(g.index, g.to_numpy(), color=color, lw=1.4, label=label)
        bottom.plot(dd.index, dd.to_numpy(), color=color, lw=1.0, label=label)
        if col == "returns":
            bottom.fill_between(dd.index, dd.to_numpy(), 0.0, color=color, alpha=0.25)
    top.axhline(100.0, color="#444", lw=0.6)
    top.set_title("Growth of 100 against the benchmark")
    top.set_ylabel("value (start = 100)")
    top.legend(loc="upper left", frameon=False)
    bottom.set_title("Drawdown from the running peak")
    _pct_axis(bottom)
    fig.tight_layout()
    return _save(fig, path)


def _monthly_chart(table: pd.DataFrame, path: Path) -> Figure:
    values = table[list(range(1, 13))].to_numpy(dtype="float64")
    fig = Figure(figsize=(10, 0.9 + 0.42 * max(len(table), 1)))
    ax = fig.subplots()
    finite = values[np.isfinite(values)]
    bound = float(np.abs(finite).max()) if finite.size else 0.01
    bound = bound if bound > 0 else 0.01
    ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", vmin=-bound, vmax=bound,
              aspect="auto")
    ax.set_xticks(range(12), MONTHS)
    ax.set_yticks(range(len(table)), [str(y) for y in table.index])
    ax.grid(False)
    for (i, j), v in np.ndenumerate(values):
        if math.isfinite(v):
            ax.text(j, i, show(v, "mkt_ret"), ha="center", va="center", fontsize=8)
    ax.set_title("Monthly returns")
    fig.tight_layout()
    return _save(fig, path)


def _rolling_chart(daily: pd.DataFrame, window: int, path: Path) -> Figure:
    fig = Figure(figsize=(10, 3.2))
    ax = fig.subplots()
    for col, label, color in (("returns", "Strategy", STRATEGY_COLOR),
                              ("benchmark_returns", "Benchmark", BENCHMARK_COLOR)):
        if col in daily:
            s = an.rolling_sharpe(daily[col], window)
            ax.plot(s.index, s.to_numpy(), color=color, lw=1.2, label=label)
    ax.axhline(0.0, color="#444", lw=0.6)
    ax.set_title(f"Rolling Sharpe ratio ({window} sessions, annualised)")
    ax.legend(loc="upper left", frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def _kill_switch_spans(ax: Any, daily: pd.DataFrame) -> None:
    if "kill_switch" not in daily:
        return
    on = daily["kill_switch"].fillna(False).astype(bool)
    for day in on.index[on.to_numpy()]:
        ax.axvspan(day - pd.Timedelta(hours=12), day + pd.Timedelta(hours=12), color="#c33",
                   alpha=0.25, lw=0)


def _exposure_chart(daily: pd.DataFrame, path: Path) -> Figure:
    fig = Figure(figsize=(10, 4.6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    for ax, col, title in ((top, "gross_exposure", "Gross exposure (of net liquidity)"),
                           (bottom, "turnover", "Turnover (traded notional / net liquidity)")):
        values = pd.to_numeric(an.column(daily, col), errors="coerce")
        ax.plot(daily.index, values.to_numpy(), color=STRATEGY_COLOR, lw=1.0)
        _kill_switch_spans(ax, daily)
        ax.set_title(title + ("; red: kill switch on" if ax is top else ""))
        _pct_axis(ax)
    fig.tight_layout()
    return _save(fig, path)


def _costs_chart(daily: pd.DataFrame, path: Path) -> Figure:
    fig = Figure(figsize=(10, 3.0))
    ax = fig.subplots()
    costs = pd.to_numeric(an.column(daily, "costs"), errors="coerce").fillna(0.0).cumsum()
    ax.plot(costs.index, costs.to_numpy(), color="#b5651d", lw=1.3)
    ax.set_title("Cumulative costs (fees and spread)")
    ax.set_ylabel("currency")
    fig.tight_layout()
    return _save(fig, path)


def _r_chart(r: pd.Series, closed: int, path: Path) -> Figure:
    fig = Figure(figsize=(10, 3.2))
    ax = fig.subplots()
    bins = int(min(40, max(5, math.ceil(math.sqrt(len(r))))))
    ax.hist(r.to_numpy(), bins=bins, color=STRATEGY_COLOR, alpha=0.8, edgecolor="white")
    ax.axvline(0.0, color="#444", lw=0.8)
    ax.axvline(float(r.mean()), color="#c33", lw=1.2, ls="--", label=f"mean {show(r.mean(), 'r')}")
    title = f"R-multiples of {len(r)} closed trades"
    ax.set_title(title + (f" (of {closed}; the others have no R)" if closed > len(r) else ""))
    ax.set_xlabel("R (P&L / initial risk)")
    ax.set_ylabel("trades")
    ax.legend(loc="upper right", frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def _image(name: str, fig: Figure, alt: str) -> dict[str, Any]:
    width, height = (round(float(x) * DPI) for x in fig.get_size_inches())
    return {"src": name, "alt": alt, "width": width, "height": height}


def draw_charts(folder: Path, frames: an.BacktestFrames,
                window: int = an.ROLLING_WINDOW) -> dict[str, dict[str, Any] | str]:
    """Write the charts into ``folder``; per chart key, the image (src, alt, size) or the
    sentence said in its place. Charts of an earlier write that no longer apply are removed."""
    daily = frames.daily.sort_index()
    returns = an.clean_returns(an.column(daily, "returns"))
    out: dict[str, dict[str, Any] | str] = {}
    with matplotlib.rc_context(_RC):
        if returns.empty:
            out["equity"] = "No session returns: nothing to draw."
        else:
            fig = _equity_chart(daily, folder / CHARTS["equity"])
            out["equity"] = _image(CHARTS["equity"], fig, "Growth of 100 and drawdown of the "
                                                       "strategy against the benchmark")
        table = an.monthly_returns(returns)
        if table.empty:
            out["monthly"] = "No session returns: no monthly returns."
        else:
            fig = _monthly_chart(table, folder / CHARTS["monthly"])
            out["monthly"] = _image(CHARTS["monthly"], fig, "Heatmap of monthly returns")
        if len(returns) < window:
            out["rolling"] = (f"The span ({len(returns)} session{'' if len(returns) == 1 else 's'}"
                              f") is shorter than the {window}-session window: no rolling "
                              "Sharpe ratio.")
        else:
            fig = _rolling_chart(daily, window, folder / CHARTS["rolling"])
            out["rolling"] = _image(CHARTS["rolling"], fig,
                                    f"Rolling {window}-session Sharpe ratio")
        if daily.empty:
            out["exposure"] = "No sessions: no exposure or turnover."
            out["costs"] = "No sessions: no costs."
        else:
            fig = _exposure_chart(daily, folder / CHARTS["exposure"])
            out["exposure"] = _image(CHARTS["exposure"], fig, "Gross exposure and turnover")
            fig = _costs_chart(daily, folder / CHARTS["costs"])
            out["costs"] = _image(CHARTS["costs"], fig, "Cumulative costs")
        trades = frames.trades
        r = (an.clean_returns(trades["r_multiple"]) if trades is not None and not trades.empty
             and "r_multiple" in trades else pd.Series([], dtype="float64"))
        if r.empty:
            out["r_multiples"] = ("No closed trades with an R-multiple: no distribution to draw."
                                  if trades is not None and len(trades) else
                                  "No trades closed in the backtest: no R-multiple distribution.")
        else:
            fig = _r_chart(r, len(trades), folder / CHARTS["r_multiples"])
            out["r_multiples"] = _image(CHARTS["r_multiples"], fig, "Histogram of R-multiples")
    for key, name in CHARTS.items():
        if isinstance(out.get(key), str):
            (folder / name).unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------- page contents


def _value(value: Any, kind: str | None) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else ("yes" if value else "no")
    if isinstance(value, (int, float, np.number)):
        return show(value, kind if kind in REPORT_FORMATS or kind in TEARSHEET_FORMATS
                    else "general")
    return str(value)


# how the promotion gates' values and thresholds are shown, by gate name
GATE_KINDS = {"sharpe": "ratio", "max_drawdown": "pct_nl", "kill_switch_days": "int",
              "escalations_per_day": "rate", "hit_rate_liquid": "prob", "hit_rate": "prob",
              "risk_gates_held": "int", "psr": "prob", "dsr": "prob", "pbo": "prob"}


def gate_rows(gates: dict | list | None) -> tuple[bool | None, list[dict[str, Any]]]:
    """The overall verdict and one row per gate (name, value, threshold, passed, note).

    ``gates``: ``{"passed": bool, "gates": [{"name", "value", "threshold", "passed", "note",
    optional "op", "source" and "kind"}, ...]}`` (as :func:`tasks.backtest.gates.
    evaluate_gates` returns), a list of such rows, or a mapping of name to row; without an
    overall ``passed`` the verdict is that every gate passed. A gate's kind of number is its
    ``kind``, else :data:`GATE_KINDS` by name, else a general format."""
    if gates is None:
        return None, []
    overall = gates.get("passed") if isinstance(gates, dict) else None
    items: Any = gates.get("gates", gates.get("rows")) if isinstance(gates, dict) else gates
    if items is None and isinstance(gates, dict):
        items = {k: v for k, v in gates.items() if isinstance(v, dict)}
    if isinstance(items, dict):
        items = [{"name": k, **v} for k, v in items.items()]
    rows = []
    for g in items or []:
        name = str(g.get("name", ""))
        kind = g.get("kind") or GATE_KINDS.get(name)
        passed = g.get("passed")
        op = str(g.get("op") or "")
        threshold = _value(g.get("threshold"), kind)
        rows.append({"name": name, "value": _value(g.get("value"), kind),
                     "threshold": f"{op} {threshold}" if op else threshold,
                     "passed": None if passed is None else bool(passed),
                     "note": str(g.get("note") or ""), "source": str(g.get("source") or "")})
    if overall is None:
        overall = bool(rows) and all(r["passed"] for r in rows)
    return bool(overall), rows


def _verdict_words(overall: bool | None, rows: list[dict[str, Any]]) -> str:
    if overall is None:
        return "No promotion gates were evaluated for this backtest."
    failed = [r["name"] for r in rows if not r["passed"]]
    if overall:
        return (f"Promote: all {len(rows)} promotion gate{'' if len(rows) == 1 else 's'} "
                "passed.")
    if not failed:
        return "Do not promote: the promotion verdict is negative."
    return (f"Do not promote: {len(failed)} of {len(rows)} promotion gates failed "
            f"({', '.join(failed)}).")


def _headline_words(summary: dict[str, Any]) -> str:
    b = summary.get("benchmark") or {}
    return (f"Over {show(summary.get('sessions'), 'int')} sessions the strategy returned "
            f"{show(summary.get('total_return'), 'mkt_ret')} (CAGR "
            f"{show(summary.get('cagr'), 'mkt_ret')}, Sharpe {show(summary.get('sharpe'), 'ratio')}"
            f", maximum drawdown {show(summary.get('max_drawdown'), 'pct_nl')}) against the "
            f"benchmark's {show(b.get('total_return'), 'mkt_ret')} (CAGR "
            f"{show(b.get('cagr'), 'mkt_ret')}, Sharpe {show(b.get('sharpe'), 'ratio')}, "
            f"maximum drawdown {show(b.get('max_drawdown'), 'pct_nl')}).")


def _notes(meta: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key in sorted(k for k in meta if "note" in str(k).lower()):
        value = meta[key]
        if isinstance(value, str) and value.strip():
            out.append(value)
        elif isinstance(value, (list, tuple)):
            out.extend(str(v) for v in value if str(v).strip())
    return out


def _meta_line(meta: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    parts = [f"{summary.get('start') or meta.get('start') or 'n/a'} to "
             f"{summary.get('end') or meta.get('end') or 'n/a'}"]
    if meta.get("baseline_id"):
        parts.append(f"baseline {meta['baseline_id']}")
    if meta.get("universe") is not None:
        parts.append(f"{show(meta['universe'], 'int')} names")
    if meta.get("reasoner"):
        parts.append(f"reasoner {meta['reasoner']}")
    if "out_of_sample" in meta:
        parts.append("out of sample" if meta["out_of_sample"] else "in sample")
    return parts


def _cell_class(v: Any) -> str:
    x = json_number(v)
    return "" if x is None or x == 0 else ("pos" if x > 0 else "neg")


def _monthly_rows(frames: an.BacktestFrames) -> list[dict[str, Any]]:
    table = an.monthly_returns(an.column(frames.daily.sort_index(), "returns"))
    return [{"year": str(y), "cells": [(show(table.at[y, m], "mkt_ret") if pd.notna(table.at[y, m])
                                         else "", _cell_class(table.at[y, m]))
                                        for m in [*range(1, 13), "year"]]}
            for y in table.index]


TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Backtest tearsheet {{ title_span }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; max-width: 1100px; }
h1 { font-size: 1.45em; margin-bottom: .2em; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em;
  border-bottom: 1px solid #ddd; } .meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; vertical-align: top; }
th { background: #eee; } td.l, th.l { text-align: left; }
.status { padding: 2px 8px; font-weight: bold; } .OK { background: #9d9; }
.ERROR { color: #fff; background: #b00; } .NONE { background: #ddd; }
#verdict { font-size: 1.1em; } .headline { font-size: 1.05em; }
.caveat { border: 1px solid #b60; background: #fff6e8; padding: 6px 10px; }
td.pos { color: #176b2c; } td.neg { color: #b00; } tr.fail td { background: #fde8e8; }
img.chart { max-width: 100%; height: auto; display: block; margin: .3em 0; }
.tables { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.empty { color: #555; font-style: italic; } .legend { font-size: .8em; color: #555; }
</style></head><body>
<h1>Backtest tearsheet</h1>
<p class="meta">{{ meta_parts|join(" · ") }}</p>

<section id="verdict"><p><span class="status {{ verdict_class }}">{{ verdict_label }}</span>
 {{ verdict_words }}</p>
<p class="headline" id="headline-words">{{ headline_words }}</p></section>

{% if survivorship or notes %}<section id="caveats">
{% if survivorship %}<p class="caveat" id="survivorship">{{ survivorship }}</p>{% endif %}
{% if notes %}<ul id="notes">{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
</section>{% endif %}

<section id="headline"><h2>Headline figures against the benchmark</h2>
<div class="tables"><table id="headline-table"><thead><tr><th class="l">figure</th><th>strategy</th>
<th>benchmark</th></tr></thead><tbody>
{% for key, label, s, b in return_rows %}<tr data-figure="{{ key }}"><th class="l">{{ label }}</th>
<td class="strategy">{{ s }}</td><td class="benchmark">{{ b }}</td></tr>{% endfor %}
</tbody></table>
<table id="activity-table"><tbody>
{% for key, label, s in activity_rows %}<tr data-figure="{{ key }}"><th class="l">{{ label }}</th>
<td>{{ s }}</td></tr>{% endfor %}
</tbody></table></div>
<p class="legend">Annualised at 252 sessions a year; no risk-free rate. The benchmark is an
equal-weight buy-and-hold of the same universe.</p></section>

{% if gates is not none %}<section id="gates"><h2>Promotion gates</h2>
<p><span class="status {{ verdict_class }}">{{ verdict_label }}</span> {{ verdict_words }}</p>
<table id="gates-table"><thead><tr><th class="l">gate</th><th>value</th><th>threshold</th>
<th>passed</th><th class="l">note</th></tr></thead><tbody>
{% for g in gates %}<tr class="{{ 'pass' if g.passed else 'fail' }}" data-gate="{{ g.name }}">
<td class="l">{{ g.name }}</td><td>{{ g.value }}</td><td>{{ g.threshold }}</td>
<td>{{ "n/a" if g.passed is none else ("yes" if g.passed else "no") }}</td>
<td class="l">{{ g.note }}{% if g.source %} <small class="legend">({{ g.source }})</small>{% endif %}
</td></tr>{% endfor %}
</tbody></table></section>{% endif %}

{% for id, title, key, caption in chart_sections %}<section id="{{ id }}"><h2>{{ title }}</h2>
{% set c = charts[key] %}{% if c is string %}<p class="empty">{{ c }}</p>{% else %}
<img class="chart" src="{{ c.src }}" alt="{{ c.alt }}" width="{{ c.width }}" height="{{ c.height }}">
{% endif %}{% if caption %}<p class="legend">{{ caption }}</p>{% endif %}
{% if key == "monthly" and monthly %}<table id="monthly-table"><thead><tr><th class="l">year</th>
{% for m in months %}<th>{{ m }}</th>{% endfor %}<th>year</th></tr></thead><tbody>
{% for row in monthly %}<tr><th class="l">{{ row.year }}</th>{% for text, cls in row.cells %}
<td class="{{ cls }}">{{ text }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>{% endif %}
</section>
{% endfor %}

{% for id, title, rows in group_tables %}<section id="{{ id }}"><h2>{{ title }}</h2>
{% if rows %}<table><thead><tr><th class="l">group</th><th>sessions</th><th>return</th>
<th>Sharpe</th><th>max drawdown</th><th>trades</th><th>hit rate</th></tr></thead><tbody>
{% for r in rows %}<tr data-group="{{ r.group }}"><th class="l">{{ r.group }}</th>
<td>{{ show(r.sessions, "int") }}</td>
<td class="{{ cell_class(r['return']) }}">{{ show(r['return'], "mkt_ret") }}</td>
<td>{{ show(r.sharpe, "ratio") }}</td><td>{{ show(r.max_drawdown, "pct_nl") }}</td>
<td>{{ show(r.trades, "int") }}</td><td>{{ show(r.hit_rate, "prob") }}</td></tr>{% endfor %}
</tbody></table>{% else %}<p class="empty">No sessions.</p>{% endif %}</section>
{% endfor %}
<p class="legend">Groups of sessions need not be contiguous: a regime's or a policy version's
sessions are chained for its return, Sharpe ratio and drawdown. A trade counts in the group of
the session it closed in (a policy version: the version it traded under).</p>
</body></html>
"""

CHART_SECTIONS = (
    ("equity", "Growth and drawdown against the benchmark", "equity",
     "Both curves start at 100 and compound the daily returns; the drawdown is measured from "
     "each curve's running peak."),
    ("monthly", "Monthly returns", "monthly", ""),
    ("rolling-sharpe", "Rolling Sharpe ratio", "rolling", ""),
    ("exposure", "Exposure and turnover", "exposure", ""),
    ("costs", "Costs", "costs", ""),
    ("r-multiples", "R-multiple distribution", "r_multiples", ""),
)


def render_tearsheet(frames: an.BacktestFrames, summary: dict[str, Any], gates: dict | None,
                     charts: dict[str, dict[str, Any] | str]) -> str:
    """The tearsheet's HTML (every text escaped)."""
    meta = frames.meta or {}
    overall, rows = gate_rows(gates)
    bench = summary.get("benchmark") or {}
    label, cls = {True: ("PROMOTE", "OK"), False: ("DO NOT PROMOTE", "ERROR"),
                  None: ("NO GATES", "NONE")}[overall]
    parts = _meta_line(meta, summary)
    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(TEMPLATE).render(
        title_span=parts[0], meta_parts=parts, verdict_label=label, verdict_class=cls,
        verdict_words=_verdict_words(overall, rows), headline_words=_headline_words(summary),
        survivorship=SURVIVORSHIP if meta.get("survivorship_bias") else "",
        notes=_notes(meta),
        return_rows=[(k, lab, show(summary.get(k), kind), show(bench.get(k), kind))
                     for k, lab, kind in RETURN_ROWS],
        activity_rows=[(k, lab, show(summary.get(k), kind)) for k, lab, kind in ACTIVITY_ROWS],
        gates=rows if gates is not None else None,
        chart_sections=CHART_SECTIONS, charts=charts, months=MONTHS,
        monthly=_monthly_rows(frames),
        group_tables=[(gid, title, an.figures_by(frames, key)) for key, gid, title in GROUPINGS],
        show=show, cell_class=_cell_class)


def write_tearsheet(folder: Path, frames: an.BacktestFrames, summary: dict[str, Any],
                    gates: dict | None) -> Path:
    """Write ``folder/tearsheet.html`` and its PNG charts beside it; returns the HTML's path.
    ``summary``: :func:`tasks.backtest.analytics.summary_figures` of ``frames``; ``gates``: the
    promotion gates (see :func:`gate_rows`) or ``None``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    charts = draw_charts(folder, frames)
    html = render_tearsheet(frames, summary, gates, charts)
    return atomic_write(folder / "tearsheet.html", lambda t: t.write_text(html, encoding="utf-8"))
