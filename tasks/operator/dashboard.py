"""The operator dashboard: one server-rendered page over :func:`tasks.operator.status.snapshot`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from tasks.plan.outputs import bar_chart

TEMPLATES = Path(__file__).parent / "templates"
PLAN_COLS = ["ticker", "action", "qty", "entry_price", "stop", "take_profit", "position_cash",
             "prob_win_cal", "exp_pnl_net", "bucket", "sector", "reason_tags"]


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def pct(v: Any, digits: int = 1) -> str:
    return f"{v:.{digits}%}" if _finite(v) else "n/a"


def money(v: Any) -> str:
    return f"{v:,.2f}" if _finite(v) else "n/a"


def cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.2f}"
    return str(v)


def line_chart(values: list[float], labels: list[str], width: int = 520, height: int = 160) -> str:
    """An inline-SVG line of ``values`` with first/last labels; '(none)' when empty."""
    pts = [v for v in values if _finite(v)]
    if len(pts) < 2:
        return "<p class='muted'>(not enough sessions yet)</p>"
    lo, hi = min(pts), max(pts)
    span = (hi - lo) or 1.0
    xs = np.linspace(40, width - 10, len(pts))
    ys = [height - 20 - (v - lo) / span * (height - 40) for v in pts]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    return (f'<svg width="{width}" height="{height}" role="img">'
            f'<polyline fill="none" stroke="#2a6" stroke-width="1.5" points="{path}"/>'
            f'<text x="0" y="14">{hi:,.0f}</text><text x="0" y="{height - 22}">{lo:,.0f}</text>'
            f'<text x="40" y="{height - 4}">{labels[0]}</text>'
            f'<text x="{width - 80}" y="{height - 4}">{labels[-1]}</text></svg>')


def calibration_points(orders: list[dict[str, Any]], bins: int = 5) -> list[tuple[float, float, int]]:
    """(mean predicted, realised hit rate, n) per quantile bin of predicted P(win)."""
    rows = [(o["prob_win_cal"], float(bool(o["win"]))) for o in orders
            if _finite(o.get("prob_win_cal")) and o.get("win") is not None]
    if len(rows) < bins:
        return []
    rows.sort()
    return [(float(np.mean([p for p, _ in part])), float(np.mean([w for _, w in part])), len(part))
            for part in np.array_split(np.array(rows), bins) if len(part)]


def calibration_chart(points: list[tuple[float, float, int]], size: int = 200) -> str:
    """Predicted vs realised as dots against the diagonal, inline SVG."""
    if not points:
        return "<p class='muted'>(no realised outcomes yet: run the nightly flow)</p>"
    top = max(max(p, r) for p, r, _ in points) * 1.1 or 1.0
    def xy(p: float, r: float) -> tuple[float, float]:
        return 30 + p / top * (size - 40), size - 20 - r / top * (size - 40)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#36c"><title>predicted {p:.1%}, '
                   f'realised {r:.1%}, n={n}</title></circle>'
                   for p, r, n in points for x, y in [xy(p, r)])
    x0, y0 = xy(0, 0)
    x1, y1 = xy(top, top)
    return (f'<svg width="{size}" height="{size}" role="img"><line x1="{x0}" y1="{y0}" x2="{x1:.1f}" '
            f'y2="{y1:.1f}" stroke="#aaa" stroke-dasharray="4"/>{dots}'
            f'<text x="30" y="{size - 4}">predicted → (max {top:.0%})</text></svg>')


def render_dashboard(s: dict[str, Any], refresh_s: int = 30) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True)
    eq = s.get("equity", [])
    live = (s.get("models") or {}).get("live") or {}
    q = s["risk"]["quarantine"]
    quarantine_text = (f"active, {q.get('days_left')} sessions left" if q.get("active")
                       else "none")
    exposure = s["risk"]["exposure"]
    return env.get_template("dashboard.html.j2").render(
        s=s, refresh_s=refresh_s, plan_cols=PLAN_COLS, pct=pct, money=money, cell=cell,
        quarantine_text=quarantine_text,
        equity_chart=Markup(line_chart([r.get("end_net_liquidity") for r in eq],
                                       [r.get("session", "") for r in eq] or [""])),
        calibration_chart=Markup(calibration_chart(calibration_points(live.get("orders_detail", [])))),
        bucket_chart=Markup(bar_chart(exposure.get("by_bucket", {}), "{:.2%}")),
        sector_chart=Markup(bar_chart(exposure.get("by_sector", {}), "{:.2%}")))
