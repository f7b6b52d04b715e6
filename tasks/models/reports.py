"""Validation report (text, PNG curves, self-contained HTML) and markdown model card from OOS predictions."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from jinja2 import Environment
from markupsafe import Markup

from tasks.models.expectancy_report import reliability_png
from tasks.models.metrics import (
    OOSMeasures,
    calibration_curve_points,
    lift_curve_points,
    metrics_table,
)
from tasks.models.signal_report import (
    HORIZON_SESSIONS,
    horizon_length,
    signal_parts,
    signal_report_html,
    signal_summary,
    signal_tables,
    write_signal_figures,
)
from tasks.models.skill import headline

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REGIMES = ("low_vol", "med_vol", "high_vol")
SIDE_BY_SIDE = ("brier", "ece", "log_loss")
REPORT_COLUMNS = ("n", "base_rate", "auc", "auc_se", "brier_raw", "brier_cal", "brier_skill", "ece_raw",
                  "ece_cal", "log_loss_raw", "log_loss_cal", "lift_at_10", "top_decile_hit", "ic_mean",
                  "ic_std", "icir", "ic_t_nw", "n_dates")
PNG_METADATA: dict[str, Any] = {"Software": None}
DPI = 100
NOTE = ("Metrics use rows with a label and a calibrated probability; *_raw columns score p_raw on the "
        "same rows.")
SURVIVORSHIP_TEXT = ("Caveat: survivorship bias - the symbol universe comes from current constituents, so "
                     "delisted names are missing and metrics are likely optimistic.")
# signal quality: costs in basis points per side per leg; the top-minus-bottom spread opens and
# closes both legs, i.e. pays 4 sides (0.20%) per holding period
SIGNAL_COST_BPS = 5.0

HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Validation report {{ title }}</title>
<style>
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin-bottom: 1em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
.caveat { color: #a00; font-weight: bold; }
.verdict { font-size: 1.1em; border: 1px solid #888; padding: 0.5em; }
figure { display: inline-block; margin: 0.5em; }
</style>
</head>
<body>
<h1>Validation report</h1>
<p class="verdict"><b>Verdict:</b> {{ verdict }}</p>
<p>{{ note }}</p>
<ul>
{% for key, value in header %}<li><b>{{ key }}</b>: {{ value }}</li>
{% endfor %}</ul>
{% if caveat %}<p class="caveat">{{ caveat }}</p>{% endif %}
{% for block in horizons %}
<h2>Horizon: {{ block.name }}</h2>
<h3>Overall</h3>
{{ block.overall }}
<h3>Per regime</h3>
{{ block.regime }}
<h3>Per year</h3>
{{ block.year }}
{% endfor %}
{% if expectancy %}<h2>Expectancy of the plan horizon ({{ expectancy.horizon }}), out of sample</h2>
<p>{{ expectancy.text }}</p>
{{ expectancy.table }}
{% endif %}
{% for block in signal %}<h2>Signal quality: {{ block.name }} ({{ block.h }} sessions), out of sample</h2>
<p class="signal-headline"><b>{{ block.headline }}</b></p>
<p>{{ block.note }}</p>
{{ block.fragment }}
{% endfor %}
<h2>Curves</h2>
{% for fig in figures %}<figure><img alt="{{ fig.name }}" src="data:image/png;base64,{{ fig.data }}">
<figcaption>{{ fig.name }}</figcaption></figure>
{% endfor %}
</body>
</html>
"""


def _fmt(value: Any) -> str:
    """Format a scalar for reports: 4-decimal floats, plain ints and strings."""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4f}"
    return str(value)


def _fmt_span(span: Any) -> str:
    """Render a (start, end) pair or {"start", "end"} mapping as 'start to end', anything else as text."""
    if isinstance(span, dict) and {"start", "end"} <= set(span):
        return f"{span['start']} to {span['end']}"
    if isinstance(span, (list, tuple)) and len(span) == 2:
        return f"{span[0]} to {span[1]}"
    return "n/a" if span is None else str(span)


def _fmt_mapping(value: Any) -> str:
    """Render a mapping as 'k=v' pairs (containers summarised by size), anything else as text."""
    if not isinstance(value, dict):
        return "n/a" if value is None else str(value)
    parts = [f"{k}: {len(v)} entries" if isinstance(v, (dict, list, tuple)) else f"{k}={v}"
             for k, v in value.items()]
    return ", ".join(parts) or "n/a"


def horizon_lags(meta: dict) -> dict[str, int] | None:
    """Newey-West lag per horizon: meta["horizon_lags"], else h - 1 from meta["horizons"] (sessions)."""
    if meta.get("horizon_lags") is not None:
        return dict(meta["horizon_lags"])
    horizons = meta.get("horizons")
    if isinstance(horizons, dict):
        return {str(k): max(0, int(h) - 1) for k, h in horizons.items()}
    return None


def _fmt_list(items: Any, limit: int = 20) -> str:
    """Comma-join a list (truncated after ``limit`` items with a total), or render a scalar as text."""
    if items is None:
        return "n/a"
    if isinstance(items, str) or not hasattr(items, "__iter__"):
        return str(items)
    values = [str(v) for v in items]
    shown = ", ".join(values[:limit])
    return shown if len(values) <= limit else f"{shown}, ... ({len(values)} in total)"


def survivorship_caveat(meta: dict) -> str | None:
    """Caveat line when ``meta["survivorship_bias"]`` is truthy (a string value is appended as detail)."""
    flag = meta.get("survivorship_bias")
    if not flag:
        return None
    return f"{SURVIVORSHIP_TEXT} {flag}" if isinstance(flag, str) else SURVIVORSHIP_TEXT


def skill_verdict(meta: dict) -> str:
    """The plain-language skill verdict that opens the report and the card: ``meta["skill_verdict"]``
    (written by training, with the promotion outcome), else built from ``meta["skill"]`` (a meta
    without one reads 'SKILL UNKNOWN')."""
    return str(meta.get("skill_verdict") or headline(meta.get("skill")))


def _skill_lines(meta: dict) -> list[str]:
    """One line of skill figures per horizon (none without a skill record)."""
    rec = meta.get("skill")
    if not isinstance(rec, dict) or not rec.get("per_horizon"):
        return []
    out = ["Skill per horizon (out of sample; P&L per trade net of costs):"]
    for name, f in rec["per_horizon"].items():
        figs = ", ".join(f"{k} {'n/a' if f.get(k) is None else _fmt(f.get(k))}"
                         for k in ("brier_skill", "ic", "ic_t", "top_decile_net", "universe_net"))
        out.append(f"  {name}: {f.get('verdict')} ({figs})")
    return out


def _header(meta: dict) -> list[tuple[str, str]]:
    """Key/value pairs heading the validation report."""
    return [("baseline_id", str(meta.get("baseline_id", "n/a"))),
            ("training span", _fmt_span(meta.get("training_span"))),
            ("data hash", str(meta.get("data_hash", "n/a")))]


def _ordered_regimes(values: Any) -> list[str]:
    """Known regimes present in ``values``, in low/med/high order."""
    present = set(pd.Series(values).dropna().astype(str).unique())
    return [r for r in REGIMES if r in present]


def _regime_sorted(frame: pd.DataFrame) -> pd.DataFrame:
    """Stable sort by horizon then regime in all/low/med/high order (unknown regimes last)."""
    if "vol_regime" not in frame.columns:
        return frame.reset_index(drop=True)
    order = {r: i for i, r in enumerate(("all", *REGIMES))}
    rank = frame["vol_regime"].map(order).fillna(len(order))
    ordered = frame.assign(_rank=rank).sort_values(["horizon", "_rank"], kind="mergesort")
    return ordered.drop(columns="_rank").reset_index(drop=True)


def validation_table(oos: pd.DataFrame, by: list[str] | None = None,
                     horizon_lags: dict[str, int] | None = None,
                     measures: OOSMeasures | None = None) -> pd.DataFrame:
    """Calibrated metrics per (horizon, *by); raw brier/ece/log_loss beside them on the same rows.

    ``measures``: the :class:`~tasks.models.metrics.OOSMeasures` of ``oos``, whose tables and
    per-date figures are shared with the other tables (the same numbers)."""
    keys = ["horizon", *(by or [])]
    if measures is None:
        cal = metrics_table(oos, by, "p_cal", horizon_lags)
        raw = metrics_table(oos.loc[oos["p_cal"].notna()], by, "p_raw", horizon_lags)
    else:
        lags = horizon_lags or {}
        cal = measures.table(by, "p_cal", horizon_lags=lags)
        raw = measures.table(by, "p_raw", need=("p_cal",), only=frozenset(SIDE_BY_SIDE),
                             horizon_lags=lags)
    raw = raw[[*keys, *SIDE_BY_SIDE]]
    merged = cal.merge(raw, on=keys, how="left", suffixes=("_cal", "_raw"))
    return _regime_sorted(merged[[*keys, *REPORT_COLUMNS]])


def _tables(oos: pd.DataFrame, lags: dict[str, int] | None,
            measures: OOSMeasures | None = None) -> dict[str, pd.DataFrame]:
    """Overall, per-regime and per-year validation tables."""
    return {"overall": validation_table(oos, None, lags, measures),
            "regime": validation_table(oos, ["vol_regime"], lags, measures),
            "year": validation_table(oos, ["year"], lags, measures)}


def _overall_lines(row: pd.Series) -> list[str]:
    """Overall metrics of one horizon, raw and calibrated side by side where both exist."""
    lines = []
    for col in REPORT_COLUMNS:
        if col.endswith("_cal"):
            base = col[: -len("_cal")]
            lines.append(f"  {base:<16}raw {_fmt(row[base + '_raw'])}   cal {_fmt(row[col])}")
        elif not col.endswith("_raw"):
            lines.append(f"  {col:<16}{_fmt(row[col])}")
    return lines


def _table_text(frame: pd.DataFrame) -> str:
    """Fixed-width text rendering of a metrics table without the horizon column."""
    body = frame.drop(columns="horizon")
    return body.to_string(index=False, float_format=_fmt) if len(body) else "  (no rows)"


def _text_report(meta: dict, tables: dict[str, pd.DataFrame], horizons: list[str]) -> str:
    """Plain-text validation report."""
    lines = ["Validation report", "=================", f"Verdict: {skill_verdict(meta)}",
             *_skill_lines(meta), "", *[f"{k}: {v}" for k, v in _header(meta)], NOTE]
    caveat = survivorship_caveat(meta)
    if caveat:
        lines.append(caveat)
    for h in horizons:
        lines += ["", f"Horizon: {h}", "-" * (9 + len(h)), "Overall"]
        for row in tables["overall"].loc[tables["overall"]["horizon"] == h].itertuples(index=False):
            lines += _overall_lines(pd.Series(row._asdict()))
        for name in ("regime", "year"):
            sub = tables[name].loc[tables[name]["horizon"] == h]
            lines += ["", f"Per {name}", _table_text(sub)]
    return "\n".join(lines) + "\n"


def _labelled(oos: pd.DataFrame, regime: str, horizon: str) -> pd.DataFrame:
    """Rows with a label for one regime and horizon: the label and both probabilities."""
    mask = (oos["vol_regime"] == regime) & (oos["horizon"] == horizon) & oos["label"].notna()
    return oos.loc[mask, ["label", "p_raw", "p_cal"]]


def _save(fig: Any, path: Path) -> Path:
    """Save a figure deterministically as PNG and close it."""
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=DPI, metadata=PNG_METADATA)
    plt.close(fig)
    return path


def _calibration_png(oos: pd.DataFrame, regime: str, horizons: list[str], path: Path) -> Path:
    """Reliability curves (raw dashed, calibrated solid) per horizon for one regime."""
    fig, ax = plt.subplots(figsize=(6.0, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for i, h in enumerate(horizons):
        sub = _labelled(oos, regime, h)
        for col, style in (("p_raw", "--"), ("p_cal", "-")):
            pts = calibration_curve_points(sub["label"], sub[col])
            ax.plot(pts["p_mean"], pts["y_mean"], linestyle=style, marker="o", markersize=3,
                    color=f"C{i}", label=f"{h} {col[2:]}")
    ax.set(title=f"Calibration - {regime}", xlabel="predicted probability", ylabel="observed frequency",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize="small")
    return _save(fig, path)


def _lift_png(oos: pd.DataFrame, regime: str, horizons: list[str], path: Path) -> Path:
    """Cumulative lift of the calibrated probability per horizon for one regime."""
    fig, ax = plt.subplots(figsize=(6.0, 4.5))
    ax.axhline(1.0, color="grey", linestyle=":", label="random")
    for i, h in enumerate(horizons):
        sub = _labelled(oos, regime, h)
        pts = lift_curve_points(sub["label"], sub["p_cal"])
        ax.plot(pts["frac"], pts["lift"], marker="o", markersize=3, color=f"C{i}", label=h)
    ax.set(title=f"Lift - {regime}", xlabel="fraction selected (top by p_cal)", ylabel="cumulative lift",
           xlim=(0, 1))
    ax.legend(loc="upper right", fontsize="small")
    return _save(fig, path)


def _figures(oos: pd.DataFrame, folder: Path, horizons: list[str]) -> dict[str, Path]:
    """Calibration and lift PNGs for every known regime present, keyed by file stem."""
    out: dict[str, Path] = {}
    for regime in _ordered_regimes(oos["vol_regime"]):
        for stem, draw in ((f"calibration_curves_{regime}", _calibration_png),
                           (f"lift_curves_{regime}", _lift_png)):
            out[stem] = draw(oos, regime, horizons, folder / f"{stem}.png")
    return out


def _table_html(frame: pd.DataFrame) -> Markup:
    """Escaped HTML table of a metrics frame, marked safe for the autoescaping template."""
    return Markup(frame.to_html(index=False, float_format=_fmt, na_rep="nan", border=0, escape=True))


def _html_report(meta: dict, tables: dict[str, pd.DataFrame], horizons: list[str],
                 figures: dict[str, Path], signal: list[dict] | None = None) -> str:
    """Self-contained HTML report with tables and base64-embedded PNGs."""
    blocks = [{"name": h, **{k: _table_html(t.loc[t["horizon"] == h].drop(columns="horizon"))
                             for k, t in tables.items()}} for h in horizons]
    images = [{"name": stem, "data": base64.b64encode(path.read_bytes()).decode("ascii")}
              for stem, path in figures.items()]
    template = Environment(autoescape=True).from_string(HTML_TEMPLATE)
    return template.render(title=str(meta.get("baseline_id", "")), header=_header(meta),
                           verdict=skill_verdict(meta),
                           caveat=survivorship_caveat(meta), note=NOTE, horizons=blocks, figures=images,
                           expectancy=_expectancy_block(meta), signal=signal or [])


def expectancy_text(summary: dict) -> str:
    """One paragraph: how the predicted expectancy held up out of sample."""
    if not summary or not summary.get("rows"):
        return "No out-of-sample expectancy (no calibrated rows)."
    pct = lambda v: f"{v * 100:+.3f}%"  # noqa: E731
    cost = summary["cost_round_trip"] * 100
    return (f"Expectancy is relative to the session's average name, net of {cost:.2f}% "
            f"round-trip costs. On a typical session {summary['share_positive_median']:.1%} of the names "
            f"have a positive net expectancy (mean {summary['share_positive_mean']:.1%}). The names in each "
            f"session's top decile were predicted {pct(summary['top_decile_pred_net'])} net and realised "
            f"{pct(summary['top_decile_real_rel'])} against the session's average name "
            f"(bottom decile {pct(summary['bottom_decile_real_rel'])}; absolute net "
            f"{pct(summary['top_decile_real_net'])}); Spearman of predicted vs realised "
            f"{summary['spearman_pred_real']:+.3f} over {summary['rows']:,} trades in "
            f"{summary['sessions']:,} sessions.")


def _expectancy_block(meta: dict) -> dict | None:
    table = meta.get("expectancy_table")
    if table is None or not isinstance(table, pd.DataFrame):
        return None
    shown = table.copy()
    for col in ("pred_net", "real_rel", "real_rel_se", "real_net"):
        shown[col] = shown[col] * 100
    shown = shown.rename(columns={"pred_net": "predicted net %", "real_rel": "realised vs session %",
                                  "real_rel_se": "s.e. %", "real_net": "realised absolute net %"})
    return {"horizon": meta.get("expectancy", {}).get("horizon", ""),
            "text": expectancy_text(meta.get("expectancy", {})), "table": _table_html(shown)}


# --------------------------------------------------------------------------- signal quality

def signal_score(oos: pd.DataFrame, horizon: str) -> str:
    """The score the plan ranks names by on ``horizon``: ``rank_score`` where that column exists
    and has a finite value on the horizon's rows, else the calibrated probability ``p_cal``."""
    if "rank_score" in oos.columns and "horizon" in oos.columns:
        values = pd.to_numeric(oos.loc[oos["horizon"] == horizon, "rank_score"], errors="coerce")
        if np.isfinite(values.to_numpy(dtype=float)).any():
            return "rank_score"
    return "p_cal"


def signal_rows(oos: pd.DataFrame) -> pd.DataFrame:
    """The rows signal quality is judged on: those with a calibrated probability (the rows the plan
    can act on, as for the skill gate; the first walk-forward fold has none), whatever the score."""
    return oos.loc[oos["p_cal"].notna()] if "p_cal" in oos.columns else oos


def _json_safe(value: Any) -> Any:
    """A plain Python scalar for strict JSON: NaN and infinities become None."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def signal_horizons(meta: dict, horizons: list[str]) -> dict[str, int]:
    """Length in sessions of each horizon: ``meta["horizons"]``, else ``meta["horizon_lags"]`` + 1,
    else the default lengths; a horizon with none of these is left out."""
    given = meta.get("horizons") if isinstance(meta.get("horizons"), dict) else {}
    lags = meta.get("horizon_lags") if isinstance(meta.get("horizon_lags"), dict) else {}
    out = {}
    for name in horizons:
        if name in given:
            out[name] = int(given[name])
        elif name in lags:
            out[name] = int(lags[name]) + 1
        elif name in HORIZON_SESSIONS:
            out[name] = HORIZON_SESSIONS[name]
    return out


def _memo(oos: pd.DataFrame, measures: OOSMeasures | None) -> dict | None:
    """Where figures derived from ``oos`` are kept: its measures' memo (None without one)."""
    return measures.memo if measures is not None and measures.oos is oos else None


def _signal_key(name: str, score: str, h: int, cost_bps: float) -> tuple:
    """The memo key of one horizon's signal parts."""
    return ("signal_parts", name, score, int(h), float(cost_bps))


def signal_quality(oos: pd.DataFrame, horizons: Mapping[str, int],
                   cost_bps: float = SIGNAL_COST_BPS, measures: OOSMeasures | None = None
                   ) -> tuple[dict[str, dict], dict[str, dict[str, pd.DataFrame]]]:
    """Signal quality of the ranking score per horizon, out of sample, keyed by horizon.

    ``horizons`` maps a horizon to its length h in sessions (Newey-West lag h - 1). On
    :func:`signal_rows`, ranking by :func:`signal_score`, with ``cost_bps`` per side per leg (the
    long-short spread pays four sides per holding period): the manifest summaries
    (:func:`tasks.models.signal_report.signal_summary`, JSON-safe: finite floats or None; the
    judged column under ``"score"``) and the report's tables
    (:func:`tasks.models.signal_report.signal_tables`). Horizons absent from ``oos`` are left
    out, and every horizon when ``oos`` has no ``fwd_return``. ``measures``: the
    :class:`~tasks.models.metrics.OOSMeasures` of ``oos``, which keeps each horizon's
    :func:`~tasks.models.signal_report.signal_parts` for the report's figures.
    """
    summaries: dict[str, dict] = {}
    tables: dict[str, dict[str, pd.DataFrame]] = {}
    if not {"horizon", "date", "fwd_return"} <= set(oos.columns):
        return summaries, tables
    rows = signal_rows(oos)
    present = set(oos["horizon"].dropna().astype(str).unique())
    for name, h in horizons.items():
        if name not in present:
            continue
        h, score = int(h), signal_score(rows, name)
        lag = max(0, h - 1)
        parts = signal_parts(rows, name, score, cost_bps, h=h, nw_lag=lag)
        memo = _memo(oos, measures)
        if memo is not None:
            memo[_signal_key(name, score, h, cost_bps)] = parts
        summary = signal_summary(rows, name, lag, cost_bps, score=score, h=h, parts=parts)
        summaries[name] = {k: _json_safe(v) for k, v in summary.items()}
        tables[name] = signal_tables(rows, name, lag, cost_bps, score=score, h=h, parts=parts)
    return summaries, tables


def _finite(value: Any) -> bool:
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


def _pct(value: Any) -> str:
    """A fraction as a percentage with 2 decimals."""
    return f"{100.0 * float(value):.2f}%" if _finite(value) else "n/a"


def _fixed(digits: int) -> Callable[[Any], str]:
    """A formatter with ``digits`` decimals (t-statistics and Sharpe ratios: 2)."""
    return lambda value: f"{float(value):.{digits}f}" if _finite(value) else "n/a"


def _count(value: Any) -> str:
    """A count: whole numbers as such, a fractional one (a tie group shared) with 1 decimal."""
    if not _finite(value):
        return "n/a"
    v = float(value)
    return f"{v:.0f}" if abs(v - round(v)) < 1e-6 else f"{v:.1f}"


IC_DISPLAY = (("year", "Year", str), ("sessions", "Sessions", _count),
              ("ic_mean", "Mean rank IC", _fixed(4)), ("ic_std", "IC s.d.", _fixed(4)),
              ("icir", "ICIR", _fixed(2)), ("ic_t_nw", "NW t", _fixed(2)),
              ("ic_positive", "Sessions with IC > 0", _pct))
DECILE_DISPLAY = (("decile", "Decile", _count), ("trades", "Trades", _count),
                  ("mean_return", "Mean return per trade", _pct),
                  ("mean_excess", "vs the session's mean", _pct))


def _display(frame: pd.DataFrame | None, spec: tuple) -> pd.DataFrame:
    """Formatted text columns of a signal table, with readable headings."""
    frame = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame()
    return pd.DataFrame({head: [fmt(v) for v in frame[col]] if col in frame.columns else []
                         for col, head, fmt in spec})


def _long_short_display(frame: pd.DataFrame | None) -> pd.DataFrame:
    """The long-short and turnover row as a two-column table (figure, value)."""
    row = frame.iloc[0] if isinstance(frame, pd.DataFrame) and len(frame) else pd.Series(dtype=float)
    get = lambda key: row.get(key, np.nan)  # noqa: E731
    bps = get("cost_bps")
    items = [("Holding period (sessions)", _count(get("h"))),
             ("Sessions with a spread", _count(get("sessions"))),
             ("Top minus bottom decile, gross mean per trade", _pct(get("ls_gross_mean"))),
             (f"Costs per trade (4 sides x {float(bps):g} bps)" if _finite(bps) else "Costs per trade",
              _pct(get("ls_cost"))),
             ("Top minus bottom decile, net mean per trade", _pct(get("ls_net_mean"))),
             ("Net mean: Newey-West t (lag h - 1)", _fixed(2)(get("ls_t_nw"))),
             ("Net Sharpe, annualised (every h-th session)", _fixed(2)(get("ls_sharpe"))),
             ("Non-overlapping periods", _count(get("periods"))),
             ("Top-decile turnover per rebalance", _pct(get("turnover"))),
             ("Rebalances (every h sessions)", _count(get("rebalances"))),
             ("Names in the top decile (mean)", _fixed(1)(get("top_names")))]
    return pd.DataFrame(items, columns=["Figure", "Value"])


def signal_headline(summary: Mapping[str, Any]) -> str:
    """One line: rank IC, net top-minus-bottom spread and turnover of a horizon's summary."""
    score, h = summary.get("score", "p_cal"), summary.get("h")
    if not summary.get("sessions"):
        return f"No out-of-sample session with a rank IC of {score}."
    ic = summary.get("ic_mean")
    ic_text = f"{float(ic):+.4f}" if _finite(ic) else "n/a"
    t2 = lambda key: _fixed(2)(summary.get(key))  # noqa: E731
    return (f"Ranking by {score}: mean daily rank IC {ic_text} (NW t {t2('ic_t_nw')}) over "
            f"{summary['sessions']} sessions; top minus bottom decile {_pct(summary.get('ls_net_mean'))} "
            f"per {h}-session trade net of costs (NW t {t2('ls_t_nw')}, Sharpe {t2('ls_sharpe')}); "
            f"top-decile turnover {_pct(summary.get('top_decile_turnover'))} per rebalance.")


def signal_note(summary: Mapping[str, Any]) -> str:
    """How the figures are measured: score, rows, horizon, Newey-West lag, costs."""
    bps = summary.get("cost_bps")
    bps = float(SIGNAL_COST_BPS if bps is None else bps)
    return (f"Score: {summary.get('score', 'p_cal')} (the column the plan ranks names by), on out-of-sample "
            f"rows with a calibrated probability. Cross-sectional: names are compared within each "
            f"session. Holding period h = {summary.get('h')} sessions; Newey-West lag "
            f"{summary.get('nw_lag')} for overlapping returns; Sharpe on every h-th session only. "
            f"Returns are forward simple returns per trade. Costs: {bps:g} bps per side per leg, so the "
            f"long-short (long the top decile, short the bottom, equal weights) pays 4 sides = "
            f"{4 * bps / 100:.2f}% per holding period.")


def _whole(frame: pd.DataFrame) -> pd.DataFrame:
    """Integer columns as nullable integers, so that they stay whole beside another table's rows."""
    ints = [c for c in frame.columns if pd.api.types.is_integer_dtype(frame[c])]
    return frame.astype({c: "Int64" for c in ints}) if ints else frame


def _signal_csv(tables: Mapping[str, pd.DataFrame], name: str) -> pd.DataFrame:
    """The raw tables of one horizon in one frame: column ``table`` (ic_by_year, deciles,
    long_short), then the union of their columns (fractions, not percentages; counts stay whole)."""
    parts = [_whole(frame).assign(table=kind) for kind, key in (("ic_by_year", f"IC by year ({name})"),
                                                        ("deciles", f"Decile returns ({name})"),
                                                        ("long_short", f"Long-short and turnover ({name})"))
             if isinstance(frame := tables.get(key), pd.DataFrame) and len(frame)]
    if not parts:
        return pd.DataFrame(columns=["table"])
    out = pd.concat(parts, ignore_index=True)
    return out[["table", *[c for c in out.columns if c != "table"]]]


def _signal_sections(oos: pd.DataFrame, meta: dict, folder: Path, horizons: list[str],
                     measures: OOSMeasures | None = None) -> tuple[list[dict], dict[str, Path]]:
    """Per horizon: headline, note, display tables, the two figures and ``signal_<horizon>.csv``.

    The summaries and tables come from ``meta["signal"]`` / ``meta["signal_tables"]`` (written by
    training), else are computed here (:func:`signal_quality`, lengths from :func:`signal_horizons`).
    Returns the sections and the files written, keyed by stem. The figures reuse the
    :func:`~tasks.models.signal_report.signal_parts` that ``measures`` keeps for their rows,
    score and length, when it does.
    """
    summaries, tables = meta.get("signal"), meta.get("signal_tables")
    if not isinstance(summaries, dict) or not isinstance(tables, dict):
        summaries, tables = signal_quality(oos, signal_horizons(meta, horizons),
                                           measures=measures)
    rows = signal_rows(oos)
    memo = _memo(oos, measures) or {}
    sections, files = [], {}
    for name, raw in tables.items():
        summary = summaries.get(name)
        if not isinstance(summary, dict) or not isinstance(raw, dict):
            continue
        csv = folder / f"signal_{name}.csv"
        _signal_csv(raw, name).to_csv(csv, index=False, lineterminator="\n")
        files[csv.stem] = csv
        figures = {}
        if "fwd_return" in rows.columns and summary.get("score") in rows.columns:
            key = _signal_key(name, summary["score"], horizon_length(name, summary.get("h")),
                              SIGNAL_COST_BPS)
            figures = write_signal_figures(rows, name, folder, score=summary["score"],
                                           h=summary.get("h"), parts=memo.get(key))
            files.update({path.stem: path for path in figures.values()})
        shown = {f"Rank IC by year ({name})": _display(raw.get(f"IC by year ({name})"), IC_DISPLAY),
                 f"Forward return by score decile ({name})":
                     _display(raw.get(f"Decile returns ({name})"), DECILE_DISPLAY),
                 f"Top minus bottom decile and turnover ({name})":
                     _long_short_display(raw.get(f"Long-short and turnover ({name})"))}
        sections.append({"name": name, "h": summary.get("h"), "headline": signal_headline(summary),
                         "note": signal_note(summary), "tables": shown,
                         "fragment": Markup(signal_report_html(shown, figures))})
    return sections, files


def _signal_text(sections: list[dict]) -> str:
    """The signal-quality sections of the text report."""
    lines = []
    for sec in sections:
        title = f"Signal quality: {sec['name']} ({sec['h']} sessions), out of sample"
        lines += ["", title, "-" * len(title), sec["headline"], sec["note"]]
        for caption, frame in sec["tables"].items():
            lines += ["", caption, frame.to_string(index=False) if len(frame) else "  (no rows)"]
    return "\n".join(lines) + "\n" if lines else ""


def write_validation_report(oos: pd.DataFrame, folder: Path, meta: dict,
                            measures: OOSMeasures | None = None) -> dict[str, Path]:
    """Write validation_report.txt, per-regime PNG curves and report.html into ``folder``; paths by stem.

    Also the signal quality of the ranking score per horizon (rank IC by year, decile returns,
    top minus bottom decile net of costs, top-decile turnover; see :func:`_signal_sections`):
    a section in both reports, ``signal_ic_by_year_<horizon>.png``, ``signal_deciles_<horizon>.png``
    and ``signal_<horizon>.csv``. ``measures``: the :class:`~tasks.models.metrics.OOSMeasures`
    of ``oos`` the tables are taken from (the same numbers, shared with the caller's)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    horizons = sorted(oos["horizon"].dropna().astype(str).unique())
    tables = _tables(oos, horizon_lags(meta), measures)
    paths = {"validation_report": folder / "validation_report.txt", "report": folder / "report.html"}
    text = _text_report(meta, tables, horizons)
    figures = _figures(oos, folder, horizons)
    exp_table = meta.get("expectancy_table")
    if isinstance(exp_table, pd.DataFrame) and not exp_table.empty:
        paths["expectancy_deciles"] = folder / "expectancy_deciles.csv"
        exp_table.to_csv(paths["expectancy_deciles"], index=False, lineterminator="\n")
        png = reliability_png(exp_table, folder / "expectancy_reliability.png")
        if png is not None:
            figures["expectancy_reliability"] = png
        text += "\nExpectancy (plan horizon), out of sample\n" + expectancy_text(
            meta.get("expectancy", {})) + "\n\n" + exp_table.to_string(index=False) + "\n"
    signal, signal_files = _signal_sections(oos, meta, folder, horizons, measures)
    text += _signal_text(signal)
    paths["validation_report"].write_text(text, encoding="utf-8")
    paths["report"].write_text(_html_report(meta, tables, horizons, figures, signal), encoding="utf-8")
    return {**paths, **figures, **signal_files}


def card_metrics(oos: pd.DataFrame, p_col: str = "p_cal",
                 horizon_lags: dict[str, int] | None = None,
                 measures: OOSMeasures | None = None) -> pd.DataFrame:
    """Metrics for the model card: overall rows (vol_regime "all") then per-regime rows, per horizon
    (``measures``: the :class:`~tasks.models.metrics.OOSMeasures` of ``oos`` to take them from)."""
    if measures is None:
        overall = metrics_table(oos, None, p_col, horizon_lags)
        regime = metrics_table(oos, ["vol_regime"], p_col, horizon_lags)
    else:
        overall = measures.table(None, p_col, horizon_lags=horizon_lags or {})
        regime = measures.table(["vol_regime"], p_col, horizon_lags=horizon_lags or {})
    overall = overall.assign(vol_regime="all")
    return _regime_sorted(pd.concat([overall, regime], ignore_index=True))


def _split_card(metrics: pd.DataFrame, meta: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Overall rows (no vol_regime, NaN or "all") and per-regime rows, else meta["metrics"]["per_regime"]."""
    if "vol_regime" in metrics.columns:
        is_all = metrics["vol_regime"].isna() | (metrics["vol_regime"].astype(str) == "all")
        overall, regime = metrics.loc[is_all], metrics.loc[~is_all]
    else:
        overall, regime = metrics, metrics.iloc[0:0]
    stored = (meta.get("metrics") or {}).get("per_regime") if isinstance(meta.get("metrics"), dict) else None
    if regime.empty and stored:
        regime = _regime_sorted(pd.DataFrame(stored))
    return overall, regime


def auc_interval(auc: float, auc_se: float) -> str:
    """AUC with a 95% normal interval: 'a ± 1.96*se (95% CI lo to hi)'."""
    half = 1.96 * auc_se
    return f"{auc:.3f} ± {half:.3f} (95% CI {auc - half:.3f} to {auc + half:.3f})"


def _card_row(row: pd.Series, lead: list[str]) -> str:
    """One markdown table row of card metrics."""
    cells = [*lead, _fmt(row["n"]), auc_interval(row["auc"], row["auc_se"]),
             f"{row['ic_mean']:.4f} (NW t {row['ic_t_nw']:.2f})", f"{row['ece']:.4f}",
             f"{row['brier_skill']:.4f}"]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _card_table(frame: pd.DataFrame, with_regime: bool) -> list[str]:
    """Markdown table of card metrics, optionally with a regime column."""
    if frame.empty:
        return ["_No rows provided._"]
    head = ["Horizon", *(["Regime"] if with_regime else []), "n", "AUC ± 1.96·SE",
            "Rank IC (NW t-stat)", "ECE", "Brier skill"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in frame.iterrows():
        lead = [str(row["horizon"]), *([str(row["vol_regime"])] if with_regime else [])]
        lines.append(_card_row(row, lead))
    return lines


def _bullets(items: list[tuple[str, str]]) -> list[str]:
    """Markdown bullet list of bold-labelled values."""
    return [f"- **{label}:** {value}" for label, value in items]


def _card_data_section(meta: dict) -> list[str]:
    """Data set section of the model card."""
    biases = survivorship_caveat(meta) or "No survivorship bias flagged."
    pit = meta.get("point_in_time", "Features at date D use only data available at or before D.")
    source = meta.get("source", meta.get("data_source", "n/a"))
    return ["## Data set", *_bullets([("Source", str(source)),
                                      ("Symbols", _fmt_list(meta.get("symbols"))),
                                      ("Span", _fmt_span(meta.get("span", meta.get("training_span")))),
                                      ("Data hash", str(meta.get("data_hash", "n/a"))),
                                      ("Biases", biases), ("Point-in-time features", str(pit))])]


def _card_training_section(meta: dict) -> list[str]:
    """Training section of the model card."""
    scheme = meta.get("walk_forward")
    refit = meta.get("refit_frequency")
    if refit is None and isinstance(scheme, dict) and scheme.get("refit_months") is not None:
        refit = f"every {scheme['refit_months']} months"
    return ["## Training", *_bullets([("Span", _fmt_span(meta.get("training_span"))),
                                      ("Walk-forward scheme", _fmt_mapping(scheme)),
                                      ("Refit frequency", "n/a" if refit is None else str(refit)),
                                      ("Models", _fmt_list(meta.get("models")))])]


def _skill_section(meta: dict) -> list[str]:
    """The skill gate's figures per horizon (nothing when the meta carries no skill record)."""
    rec = meta.get("skill")
    if not isinstance(rec, dict) or not rec.get("per_horizon"):
        return []
    thr = rec.get("thresholds", {})
    lines = ["## Skill gate", "",
             f"Skilled = Brier skill > {thr.get('min_brier_skill')} and rank-IC Newey–West t >= "
             f"{thr.get('min_ic_t')} (out of sample). Plan horizon: {rec.get('horizon')}. "
             "Barrier P&L per trade net of a round trip of costs "
             f"({_fmt_opt((rec.get('costs') or {}).get('round_trip'))}).", "",
             "| Horizon | Verdict | Brier skill | Rank IC | NW t | Top decile net | Universe net |",
             "|---|---|---|---|---|---|---|"]
    for name, f in rec["per_horizon"].items():
        cells = [name, f.get("verdict", "n/a"), *(_fmt_opt(f.get(k)) for k in
                                                  ("brier_skill", "ic", "ic_t", "top_decile_net",
                                                   "universe_net"))]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _fmt_opt(value: Any) -> str:
    return "n/a" if value is None else _fmt(value)


def write_model_card(path: Path, meta: dict, metrics: pd.DataFrame) -> Path:
    """Write a markdown model card (data, label, training, metrics with uncertainty, known limits)."""
    overall, regime = _split_card(metrics, meta)
    limits = [f"- {item}" for item in meta.get("limits", [])] or ["- None recorded."]
    lines = [f"# Model card: {meta.get('baseline_id', 'n/a')}", "",
             f"**Verdict:** {skill_verdict(meta)}", "", *_skill_section(meta),
             *_card_data_section(meta), "",
             "## Label definition", str(meta.get("label_definition", "n/a")), "",
             *_card_training_section(meta), "", "## Metrics", "", "### Overall per horizon",
             *_card_table(overall, with_regime=False), "", "### Per regime", *_card_table(regime, True), "",
             "## Known limits", *limits]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
