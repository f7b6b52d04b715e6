"""The operator dashboard: one server-rendered page over :func:`tasks.operator.status.snapshot`."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup, escape

from tasks.plan.outputs import bar_chart

TEMPLATES = Path(__file__).parent / "templates"
PLAN_COLS = ["ticker", "action", "qty", "entry_price", "stop", "take_profit", "position_cash",
             "prob_win_cal", "exp_pnl_net", "bucket", "sector", "reason_tags"]


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def unsigned_zero(text: str) -> str:
    """``-0.0%`` -> ``0.0%``: a value that rounds to zero is shown without a sign."""
    if text[:1] in "-+" and not any(c in "123456789" for c in text):
        return text[1:]
    return text


def pct(v: Any, digits: int = 2) -> str:
    """A fraction as a percentage (``0.0123`` -> ``1.23%``); 'n/a' when missing."""
    return unsigned_zero(f"{v:.{digits}%}") if _finite(v) else "n/a"


def money(v: Any) -> str:
    return unsigned_zero(f"{v:,.2f}") if _finite(v) else "n/a"


def signed(v: Any, digits: int = 2) -> str:
    """A z-score or change with its sign (``+1.52``), zero without one; 'n/a' when missing."""
    return unsigned_zero(f"{v:+.{digits}f}") if _finite(v) else "n/a"


def cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return unsigned_zero(f"{v:.4f}" if abs(v) < 10 else f"{v:,.2f}")
    return str(v)


def series_chart(series: list[tuple[str, list[float | None], str]], labels: list[str],
                 width: int = 520, height: int = 180, fmt: str = "{:,.0f}",
                 chart_id: str | None = None) -> str:
    """Inline-SVG lines, one per ``(name, values, colour)`` on a common scale, with the first and
    last labels and a legend giving each line's last value; '(not enough sessions yet)' when no
    line has two points. A missing value (None/NaN) is a gap the line skips."""
    drawn = [(name, vals, colour) for name, vals, colour in series
             if sum(_finite(v) for v in vals) >= 2]
    if not drawn:
        return "<p class='muted'>(not enough sessions yet)</p>"
    pts = [v for _, vals, _ in drawn for v in vals if _finite(v)]
    lo, hi = min(pts), max(pts)
    span = (hi - lo) or 1.0
    n = max(len(vals) for _, vals, _ in drawn)
    xs = np.linspace(50, width - 10, n) if n > 1 else np.array([50.0])
    bottom = height - 20 - 14 * len(drawn)  # y of the lowest value; labels and legend below
    lines, legend = [], []
    for k, (name, vals, colour) in enumerate(drawn):
        path = " ".join(f"{xs[i]:.1f},{bottom - (v - lo) / span * (bottom - 10):.1f}"
                        for i, v in enumerate(vals) if _finite(v))
        key = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        lines.append(f'<polyline class="series series-{key}" data-series="{escape(name)}" '
                     f'fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>')
        last = next(v for v in reversed(vals) if _finite(v))
        legend.append(f'<text class="legend legend-{key}" x="50" y="{bottom + 30 + 14 * k}" '
                      f'fill="{colour}">&#9472; {escape(name)}: {fmt.format(last)}</text>')
    ident = f' id="{chart_id}"' if chart_id else ""
    return (f'<svg{ident} width="{width}" height="{height}" role="img">'
            + "".join(lines)
            + f'<text x="0" y="14">{fmt.format(hi)}</text>'
            f'<text x="0" y="{bottom}">{fmt.format(lo)}</text>'
            f'<text x="50" y="{bottom + 14}">{escape(labels[0])}</text>'
            f'<text x="{width - 80}" y="{bottom + 14}">{escape(labels[-1])}</text>'
            + "".join(legend) + "</svg>")


def line_chart(values: list[float], labels: list[str], width: int = 520, height: int = 160) -> str:
    """An inline-SVG line of ``values`` with first/last labels; '(none)' when empty."""
    return series_chart([("value", list(values), "#2a6")], labels or [""], width, height)


def equity_chart(bench: dict[str, Any]) -> str:
    """The book's equity against the equal-weight buy-and-hold of the plan's universe, both
    rebased to 100 (:func:`tasks.operator.status.equity_vs_benchmark`)."""
    series = [("book", bench.get("book") or [], "#2a6")]
    if bench.get("benchmark"):
        series.append((f"equal-weight buy-and-hold ({bench.get('universe')} names)",
                       bench["benchmark"], "#c60"))
    chart = series_chart(series, bench.get("labels") or [""], fmt="{:.2f}", chart_id="equity-svg")
    notes = []
    if bench.get("benchmark") and bench.get("universe_source"):
        notes.append(f"benchmark: {bench['universe_source']}, held from the close of "
                     f"{bench['labels'][0]} (adjusted closes, never rebalanced)")
    elif bench.get("note"):
        notes.append(f"no benchmark: {bench['note']}")
    return chart + "".join(f"<p class='muted' id='equity-note'>{escape(t)}</p>" for t in notes)


MIN_CALIBRATION_BINS = 3     # the chart needs at least this many bins with data
MIN_PER_CALIBRATION_BIN = 5  # closed orders per bin


def calibration_rows(orders: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(predicted P(win), won) of each closed order with both known."""
    return [(float(o["prob_win_cal"]), float(bool(o["win"]))) for o in orders
            if _finite(o.get("prob_win_cal")) and o.get("win") is not None]


def calibration_points(orders: list[dict[str, Any]], bins: int = 5) -> list[tuple[float, float, int]]:
    """(mean predicted, realised hit rate, n) per quantile bin of predicted P(win): at most
    ``bins`` bins of at least ``MIN_PER_CALIBRATION_BIN`` closed orders each."""
    rows = sorted(calibration_rows(orders))
    k = min(bins, len(rows) // MIN_PER_CALIBRATION_BIN)
    if k < 1:
        return []
    return [(float(np.mean([p for p, _ in part])), float(np.mean([w for _, w in part])), len(part))
            for part in np.array_split(np.array(rows), k) if len(part)]


def calibration_chart(points: list[tuple[float, float, int]], size: int = 200,
                      n_orders: int | None = None) -> str:
    """Predicted vs realised as dots against the diagonal, inline SVG; a sentence instead while
    fewer than ``MIN_CALIBRATION_BINS`` bins hold data."""
    if len(points) < MIN_CALIBRATION_BINS:
        need = MIN_CALIBRATION_BINS * MIN_PER_CALIBRATION_BIN
        have = n_orders if n_orders is not None else sum(n for _, _, n in points)
        return (f"<p class='muted' id='calibration-note'>Not enough closed orders for a "
                f"calibration chart: it needs {need} closed orders with a predicted P(win) "
                f"({MIN_CALIBRATION_BINS} bins of {MIN_PER_CALIBRATION_BIN}); the nightly "
                f"record has {have}.</p>")
    top = max(max(p, r) for p, r, _ in points) * 1.1 or 1.0
    def xy(p: float, r: float) -> tuple[float, float]:
        return 30 + p / top * (size - 40), size - 20 - r / top * (size - 40)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#36c"><title>predicted {p:.1%}, '
                   f'realised {r:.1%}, n={n}</title></circle>'
                   for p, r, n in points for x, y in [xy(p, r)])
    x0, y0 = xy(0, 0)
    x1, y1 = xy(top, top)
    return (f'<svg id="calibration-svg" width="{size}" height="{size}" role="img"><line x1="{x0}" '
            f'y1="{y0}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="#aaa" stroke-dasharray="4"/>{dots}'
            f'<text x="30" y="{size - 4}">predicted → (max {top:.0%})</text></svg>')


def render_dashboard(s: dict[str, Any], refresh_s: int = 30) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True)
    live = (s.get("models") or {}).get("live") or {}
    orders = live.get("orders_detail", [])
    q = s["risk"]["quarantine"]
    quarantine_text = (f"active, {q.get('days_left')} sessions left" if q.get("active")
                       else "none")
    exposure = s["risk"]["exposure"]
    bench = s.get("equity_benchmark") or {}
    return env.get_template("dashboard.html.j2").render(
        s=s, refresh_s=refresh_s, plan_cols=PLAN_COLS, pct=pct, money=money, cell=cell,
        signed=signed, quarantine_text=quarantine_text,
        equity_chart=Markup(equity_chart(bench)),
        calibration_chart=Markup(calibration_chart(calibration_points(orders),
                                                   n_orders=len(calibration_rows(orders)))),
        bucket_chart=Markup(bar_chart(exposure.get("by_bucket", {}), "{:.2%}")),
        sector_chart=Markup(bar_chart(exposure.get("by_sector", {}), "{:.2%}")))
