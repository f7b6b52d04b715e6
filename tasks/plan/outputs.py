"""Write one session's outputs: dated archives plus the runbook's "latest" copies.

For session D:

- ``data/daily/<D>/signals_with_gates.parquet`` (every scored symbol: probabilities, edges,
  gates, score, action, expectancy) and ``shadow_signals.parquet`` when a shadow model exists;
- ``val/plans/<D>/trade_plan.csv`` and ``trade_plan_audit.parquet`` (every candidate and why
  it was or was not taken);
- ``reports/health/daily_health_<D>.json`` and ``reports/daily/<D>.html``;
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
    """Write the dated files, then the latest copies; returns every path written."""
    where = output_paths(paths, day)
    written = {
        "signals": atomic_write_parquet(where["signals"], _signals_for_disk(signals)),
        "plan": atomic_write(where["plan"], lambda t: t.write_bytes(plan_csv_bytes(plan))),
        "audit": atomic_write_parquet(where["audit"], audit),
        "health": atomic_write_json(where["health"], health),
        "report": atomic_write(where["report"],
                               lambda t: t.write_text(render_report(day, plan, health))),
    }
    if shadow is not None:
        written["shadow"] = atomic_write_parquet(where["shadow"], shadow)
    marker = paths.data / "daily" / "latest.json"
    last = json.loads(marker.read_text())["date"] if marker.is_file() else ""
    if day >= last:
        for key, target in latest_paths(paths).items():
            data = written[key].read_bytes()
            atomic_write(target, lambda t, d=data: t.write_bytes(d))
            written[f"latest_{key}"] = target
        atomic_write_json(marker, {"date": day})
    return written





REPORT = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Daily plan {{ day }}</title>
<style>
body { font-family: sans-serif; margin: 2em; } table { border-collapse: collapse; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; } th { background: #eee; }
.ERROR { color: #fff; background: #b00; } .WARNING { background: #fd6; } .OK { background: #9d9; }
.status { padding: 2px 8px; font-weight: bold; } svg text { font-size: 11px; }
.empty-book { color: #b00; border: 1px solid #b00; padding: 4px 8px; }
td:last-child { text-align: left; font-size: .9em; }
</style></head><body>
<h1>Pre-market plan for the session after {{ day }}</h1>
<p><span class="status {{ status }}">{{ status }}</span>
 net liquidity {{ "{:,.2f}".format(nl) }} &middot; model {{ model }} &middot; policy {{ policy }}</p>
{% if errors %}<h2>Stop trading</h2><ul>{% for e in errors %}<li>{{ e }}</li>{% endfor %}</ul>
<p>The plan holds no orders.</p>{% endif %}
{% if empty_book %}<p class="empty-book"><b>{{ empty_book }}</b></p>{% endif %}
{% if warnings %}<h2>Warnings</h2><ul>{% for w in warnings %}<li>{{ w }}</li>{% endfor %}</ul>{% endif %}
<h2>Trade plan ({{ plan_rows|length }} orders)</h2>
<table><tr>{% for c in plan_cols %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in plan_rows %}<tr>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}
</table>
<h2>Coverage</h2>
<p>{{ cov.signals_count }} gated signals ({{ cov.buy }} BUY, {{ cov.sell }} SELL) out of
{{ cov.scored }} scored symbols: {{ cov_pct }} (band {{ cov.band_pct[0] }}-{{ cov.band_pct[1] }}%).</p>
<h2>Regime mix</h2>{{ regime_chart }}
<h2>Exposure by bucket (fraction of net liquidity)</h2>{{ bucket_chart }}
<h2>Exposure by sector (fraction of net liquidity)</h2>{{ sector_chart }}
<p>Top-5 {{ top5 }} &middot; largest name {{ largest }} &middot; gross {{ gross }}</p>
{% if esc %}<h2>Escalation</h2>
<p>Policy {{ esc.policy_before }} &rarr; {{ esc.policy_after }}.</p>
<table><tr><th>trigger</th><th>call type</th><th>threshold</th><th>fired</th><th>evaluable</th></tr>
{% for t in esc.triggers %}<tr><td>{{ t.name }}</td><td>{{ t.call_type }}</td><td>{{ t.threshold }}</td>
<td>{{ t.fired }}</td><td>{{ t.evaluable }}</td></tr>{% endfor %}</table>
<ul>{% for c in esc.calls %}<li>{{ c.call_type }}: {{ c.status }} ({{ c.backend or "no backend" }}),
{{ c.clipped }} clipped, {{ c.rejected }} rejected</li>{% else %}<li>no call</li>{% endfor %}</ul>{% endif %}
</body></html>
"""


def bar_chart(values: dict[str, float], fmt: str = "{:.1%}") -> str:
    """A small horizontal bar chart as inline SVG (deterministic text)."""
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
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_report(day: str, plan: pd.DataFrame, health: dict[str, Any]) -> str:
    from markupsafe import Markup

    from tasks.health.checks import empty_book_line

    m, s = health["metrics"], health["summary"]
    exp = m["exposure"]
    cov = m["coverage"]
    shown = [(c, h, f) for c, h, f in PLAN_TABLE if c in plan]
    cols = [h for _, h, _ in shown]
    rows = [[f(v) for (_, _, f), v in zip(shown, r, strict=True)]
            for r in plan[[c for c, _, _ in shown]].itertuples(index=False)]
    regime = {k: v / 100 for k, v in m["regime"]["regime_distribution"].items()}
    def pct(v):
        return (f"{v:.1%}" if isinstance(v, float) and math.isfinite(v) else "n/a")
    return Environment(autoescape=True).from_string(REPORT).render(
        day=day, status=s["status"], errors=s["errors"], warnings=s["warnings"],
        nl=health["net_liquidity"], model=health.get("model", {}).get("active"),
        policy=health.get("policy_version"), plan_cols=cols, plan_rows=rows, cov=cov,
        cov_pct=f"{cov['coverage_pct']:.1f}%" if cov["coverage_pct"] is not None else "n/a",
        regime_chart=Markup(bar_chart(regime)),
        bucket_chart=Markup(bar_chart(exp.get("by_bucket", {}), "{:.2%}")),
        sector_chart=Markup(bar_chart(exp.get("by_sector", {}), "{:.2%}")),
        top5=pct(exp.get("top5")), largest=pct(exp.get("largest_name")),
        gross=pct(exp.get("gross")),
        esc=health["escalation"] if (health.get("escalation") or {}).get("enabled") else None,
        empty_book=empty_book_line(health.get("empty_book")))


def _pct(digits: int) -> Any:
    return lambda v: (f"{v * 100:.{digits}f}%" if isinstance(v, float) and math.isfinite(v)
                      else "n/a")


# the analyst's table: (plan column, header, format); probabilities and P&L in percent
PLAN_TABLE = [("ticker", "ticker", str), ("action", "action", str), ("qty", "qty", str),
              ("entry_price", "entry", lambda v: f"{v:,.2f}"),
              ("stop", "stop", lambda v: f"{v:,.2f}"),
              ("take_profit", "take profit", lambda v: f"{v:,.2f}"),
              ("position_cash", "cash", lambda v: f"{v:,.0f}"),
              ("pct_of_nl", "% of NL", _pct(2)),
              ("prob_win_cal", "P(take-profit)", _pct(1)), ("p_stop", "P(stop)", _pct(1)),
              ("p_timeout", "P(timeout)", _pct(1)),
              ("exp_pnl_net", "exp. net", _pct(3)), ("exp_pnl_lb", "exp. lower bound", _pct(3)),
              ("exp_r", "exp. R", lambda v: f"{v:+.3f}"),
              ("bucket", "bucket", str), ("sector", "sector", str),
              ("reason_tags", "why", lambda v: str(v).replace(";", "; "))]
