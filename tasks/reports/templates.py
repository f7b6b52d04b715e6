"""jinja2 templates of the post-mortem (Markdown and HTML) and of its template narrative."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, StrictUndefined


def _pct(v: Any) -> str:
    try:
        return f"{float(v):.2%}"
    except (TypeError, ValueError):
        return "n/a"


def _num(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_num(x)}" for k, x in v.items())
    return str(v)


def _env(autoescape: bool) -> Environment:
    env = Environment(undefined=StrictUndefined, autoescape=autoescape, trim_blocks=True,
                      lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(pct=_pct, num=_num)
    return env


def narrative_facts(f: dict[str, Any]) -> dict[str, Any]:
    """The compact facts a narrative is written from (LLM prompt and template alike)."""
    ex, plan, real = f["execution"] or {}, f["plan"] or {}, f["realised"] or {}
    return {"session": f["session"], "has_execution": f["execution"] is not None,
            "day_pnl_pct": ex.get("day_pnl_pct"), "pnl_by_bucket": ex.get("pnl_by_bucket", {}),
            "kill_switch": bool(ex.get("kill_switch")), "exits": f["trades"]["exits"],
            "realised_pnl": f["trades"]["realised_pnl"], "plan_orders": plan.get("orders"),
            "health": (f["health"] or {}).get("status"),
            "warnings": (f["health"] or {}).get("warnings", [])[:5],
            "fired": [t["name"] for t in f["triggers"] if t["fired"]],
            "escalations": [f"{e['call_type']} {e['status']}" for e in f["escalations"]],
            "hit_rate": real.get("hit_rate"), "expected_hit_rate": real.get("expected_hit_rate"),
            "realised_orders": real.get("orders"), "root_causes": f["root_causes"][:3]}


NARRATIVE = _env(False).from_string(
    "Session {{ session }}: "
    "{% if has_execution %}the account's day P&L was {{ day_pnl_pct|pct }}"
    "{% if kill_switch %} and the kill switch fired{% endif %}, with {{ exits }} closed trade(s)."
    "{% else %}no execution record for {{ session }}, so its P&L and trades are unknown.{% endif %}"
    " The plan prepared as of {{ session }} holds {{ plan_orders if plan_orders is not none "
    "else 'no' }} order(s); daily health {{ health or 'unknown' }}"
    "{% if warnings %} with {{ warnings|length }} warning(s){% endif %}. "
    "{% if fired %}Escalation triggers fired: {{ fired|join(', ') }}; "
    "{{ escalations|join(', ') if escalations else 'no call recorded' }}. "
    "{% else %}No escalation trigger fired. {% endif %}"
    "{% if hit_rate is not none %}Plans whose horizon ended by {{ session }} hit "
    "{{ hit_rate|pct }} against an expected {{ expected_hit_rate|pct }} over "
    "{{ realised_orders }} order(s). {% endif %}"
    "Main finding: {{ root_causes[0] }}")

_MD = """# Post-mortem of session {{ f.session }}

Narrative written by **{{ story.backend }}**{% if story.backend == 'template' %} (the deterministic template: no local model answered{% if story.tried %}; tried {{ story.tried|join(', ') }}{% endif %}){% endif %}.
Proposals by **{{ props.backend }}**. Policy in force now: `{{ f.policy_now }}`.

## Narrative

> {{ story.text }}

## Root causes

{% for r in f.root_causes %}
- {{ r }}
{% endfor %}

## Recommendations

{% for r in f.recommendations %}
- {{ r }}
{% endfor %}

## Execution

{% if f.execution %}
| mode | start NL | end NL | day P&L | kill switch | orders | fills | turnover |
|---|---|---|---|---|---|---|---|
| {{ f.execution.mode }} | {{ f.execution.start_net_liquidity|num }} | {{ f.execution.end_net_liquidity|num }} | {{ f.execution.day_pnl_pct|pct }} | {{ f.execution.kill_switch|num }} | {{ f.execution.orders }} | {{ f.execution.fills }} | {{ f.execution.turnover|num }} |

P&L by bucket (fraction of start net liquidity):
{% for k, v in f.execution.pnl_by_bucket.items() %}
- {{ k }}: {{ v|pct }}
{% endfor %}

Clamps fired intraday: {{ f.execution.clamps_fired|num if f.execution.clamps_fired else 'none' }}.
{% if f.equity %}
Drawdown below the running peak: {{ f.equity.drawdown|pct }}.
{% endif %}

{% else %}
No execution record for {{ f.session }} (`data/state/sessions/{{ f.session }}.json` is absent):
P&L by bucket, fills and intraday clamps are unknown.
{% endif %}

## Trades

{% if f.trades.error %}
The trade log could not be read: {{ f.trades.error }}

{% endif %}
{% if f.trades.records %}
{{ f.trades.records }} trade-log record(s) ({{ f.trades.by_event|num }}); {{ f.trades.exits }} exit(s), {{ f.trades.winners }} winner(s), {{ f.trades.losers }} loser(s), realised P&L {{ f.trades.realised_pnl|num }}.

| symbol | event | direction | qty | entry | exit | pnl | policy |
|---|---|---|---|---|---|---|---|
{% for t in f.trades.rows %}
| {{ t.symbol }} | {{ t.event }} | {{ t.direction }} | {{ t.qty|num }} | {{ t.entry_price|num }} | {{ t.exit_price|num }} | {{ t.pnl|num }} | {{ t.policy_version }} |
{% endfor %}
{% else %}
No trade-log record for {{ f.session }}.
{% endif %}

## Plan traded in session {{ f.session }}

{% if f.plan_traded %}
Prepared as of {{ f.plan_traded.as_of }}: {{ f.plan_traded.orders }} order(s) ({{ f.plan_traded.buy }} BUY, {{ f.plan_traded.sell }} SELL), {{ f.plan_traded.cash|num }} in cash; policy {{ f.plan_traded.policy_versions|join(', ') or 'n/a' }}.
{% else %}
No earlier plan on file.
{% endif %}

## Plan prepared as of {{ f.session }}

{% if f.plan %}
{{ f.plan.orders }} order(s) ({{ f.plan.buy }} BUY, {{ f.plan.sell }} SELL), {{ f.plan.cash|num }} in cash, by bucket {{ f.plan.by_bucket|num }}; policy {{ f.plan.policy_versions|join(', ') or 'n/a' }}, model {{ f.plan.model_ids|join(', ') or 'n/a' }}.
Clamps that cut planned orders: {{ f.plan.clamps|num if f.plan.clamps else 'none' }}.
{% for c in f.plan.conflicts %}
- conflict {{ c.symbol }} ({{ c.by }}): {{ c.note }}
{% endfor %}
{% else %}
No daily plan for {{ f.session }}.
{% endif %}

## Health

{% if f.health %}
Status **{{ f.health.status }}**.
{% for e in f.health.errors %}
- ERROR: {{ e }}
{% endfor %}
{% for w in f.health.warnings %}
- WARNING: {{ w }}
{% endfor %}
{% else %}
No health report for {{ f.session }}.
{% endif %}

## Escalation triggers

{% if f.triggers %}
| trigger | call type | value | threshold | fired | evaluable | source |
|---|---|---|---|---|---|---|
{% for t in f.triggers %}
| {{ t.name }} | {{ t.call_type }} | {{ t.value|num }} | {{ t.threshold }} | {{ t.fired|num }} | {{ t.evaluable|num }} | {{ t.source }} |
{% endfor %}
{% else %}
No trigger evaluation recorded for {{ f.session }}.
{% endif %}

## Escalations

{% for e in f.escalations %}
### {{ e.call_type }}: {{ e.status }}{% if e.backend %} (answered by {{ e.backend }}){% endif %}

Triggers: {{ e.triggers|join(', ') or 'none' }}. Attempts: {{ e.attempts|join('; ') }}.
Applied deltas: {{ e.applied|num if e.applied else 'none' }}.
{% for c in e.clipped %}
- clipped {{ c.field }}: {{ c.proposed|num }} -> {{ c.applied|num }} ({{ c.reason }})
{% endfor %}
{% for r in e.rejected %}
- rejected {{ r.field }}: {{ r.proposed|num }} ({{ r.reason }})
{% endfor %}
Policy {{ e.policy_before }} -> {{ e.policy_after }}.
{% if e.diff %}

```diff
{{ e.diff }}```
{% endif %}

{% else %}
No escalation on {{ f.session }}.
{% endfor %}

## Realised outcomes of earlier plans

{% if f.realised and f.realised.orders %}
{{ f.realised.orders }} order(s) with a finished horizon: hit rate {{ f.realised.hit_rate|pct }} vs expected {{ f.realised.expected_hit_rate|pct }}, mean return {{ f.realised.mean_return|pct }}.
{% else %}
No realised outcomes recorded for {{ f.session }}.
{% endif %}

## Alerts

{% for a in f.alerts %}
- {{ a.level }} `{{ a.code }}`: {{ a.text }}
{% else %}
None.
{% endfor %}

## Feature/toggle proposals (proposals only)

Nothing here is applied: a change needs a new policy version (`hcp policy`).
{% for p in props['items'] %}
- {{ p.action }} `{{ p.feature }}`: {{ p.reason }}
{% else %}
- none
{% endfor %}
"""

_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Post-mortem {{ f.session }}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;
font-size:.85em}th,td{border:1px solid #ccc;padding:2px 6px}th{background:#eee}
pre{background:#f6f6f6;padding:.5em}blockquote{border-left:4px solid #9bd;margin:0;padding-left:1em}
</style></head><body>
<h1>Post-mortem of session {{ f.session }}</h1>
<p>Narrative written by <b>{{ story.backend }}</b>{% if story.backend == 'template' %} (the deterministic template: no local model answered){% endif %};
proposals by <b>{{ props.backend }}</b>; policy in force now <code>{{ f.policy_now }}</code>.</p>
<h2>Narrative</h2><blockquote>{{ story.text }}</blockquote>
<h2>Root causes</h2><ul>{% for r in f.root_causes %}<li>{{ r }}</li>{% endfor %}</ul>
<h2>Recommendations</h2><ul>{% for r in f.recommendations %}<li>{{ r }}</li>{% endfor %}</ul>
<h2>Execution</h2>
{% if f.execution %}<p>mode {{ f.execution.mode }}, day P&amp;L {{ f.execution.day_pnl_pct|pct }},
kill switch {{ f.execution.kill_switch|num }}, orders {{ f.execution.orders }}, fills {{ f.execution.fills }}.</p>
<table><tr><th>bucket</th><th>P&amp;L</th></tr>{% for k, v in f.execution.pnl_by_bucket.items() %}
<tr><td>{{ k }}</td><td>{{ v|pct }}</td></tr>{% endfor %}</table>
{% else %}<p>No execution record for {{ f.session }}: P&amp;L, fills and intraday clamps are unknown.</p>{% endif %}
<h2>Trades</h2>{% if f.trades.error %}<p><b>The trade log could not be read:</b> {{ f.trades.error }}</p>{% endif %}<p>{{ f.trades.records }} record(s), {{ f.trades.exits }} exit(s), realised P&amp;L {{ f.trades.realised_pnl|num }}.</p>
<h2>Plan traded in session {{ f.session }}</h2>
{% if f.plan_traded %}<p>prepared as of {{ f.plan_traded.as_of }}: {{ f.plan_traded.orders }} order(s), policy {{ f.plan_traded.policy_versions|join(', ') }}</p>{% else %}<p>No earlier plan on file.</p>{% endif %}
<h2>Plan prepared as of {{ f.session }}</h2>
{% if f.plan %}<p>{{ f.plan.orders }} order(s); clamps {{ f.plan.clamps|num if f.plan.clamps else 'none' }};
policy {{ f.plan.policy_versions|join(', ') }}.</p>
<ul>{% for c in f.plan.conflicts %}<li>{{ c.symbol }} ({{ c.by }}): {{ c.note }}</li>{% endfor %}</ul>
{% else %}<p>No daily plan for {{ f.session }}.</p>{% endif %}
<h2>Health</h2>{% if f.health %}<p>{{ f.health.status }}</p><ul>
{% for w in f.health.errors + f.health.warnings %}<li>{{ w }}</li>{% endfor %}</ul>{% else %}<p>none</p>{% endif %}
<h2>Escalation triggers</h2><table><tr><th>trigger</th><th>call type</th><th>value</th>
<th>threshold</th><th>fired</th><th>evaluable</th><th>source</th></tr>
{% for t in f.triggers %}<tr><td>{{ t.name }}</td><td>{{ t.call_type }}</td><td>{{ t.value|num }}</td>
<td>{{ t.threshold }}</td><td>{{ t.fired|num }}</td><td>{{ t.evaluable|num }}</td><td>{{ t.source }}</td></tr>{% endfor %}</table>
<h2>Escalations</h2>{% for e in f.escalations %}<h3>{{ e.call_type }}: {{ e.status }} ({{ e.backend or 'no backend' }})</h3>
<p>attempts: {{ e.attempts|join('; ') }}; applied {{ e.applied|num if e.applied else 'none' }};
{{ e.clipped|length }} clipped, {{ e.rejected|length }} rejected; policy {{ e.policy_before }} &rarr; {{ e.policy_after }}</p>
<ul>{% for c in e.clipped %}<li>clipped {{ c.field }}: {{ c.proposed|num }} &rarr; {{ c.applied|num }} ({{ c.reason }})</li>{% endfor %}
{% for r in e.rejected %}<li>rejected {{ r.field }}: {{ r.proposed|num }} ({{ r.reason }})</li>{% endfor %}</ul>
{% if e.diff %}<pre>{{ e.diff }}</pre>{% endif %}{% else %}<p>none</p>{% endfor %}
<h2>Alerts</h2><ul>{% for a in f.alerts %}<li>{{ a.level }} {{ a.code }}: {{ a.text }}</li>{% endfor %}</ul>
<h2>Feature/toggle proposals (proposals only)</h2><ul>{% for p in props['items'] %}
<li>{{ p.action }} {{ p.feature }}: {{ p.reason }}</li>{% else %}<li>none</li>{% endfor %}</ul>
</body></html>
"""

MARKDOWN = _env(False).from_string(_MD)
HTML = _env(True).from_string(_HTML)
