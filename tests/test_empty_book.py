"""Never a silent empty book: BUY signals that all die in the chain are said everywhere a user looks.

One copy of the trained demo home, a minimum order no position can reach
(``HCP_GUARDRAILS__MIN_POSITION_CASH``), then ``hcp run daily`` and ``hcp replay`` through the
command line on a real (temporary) Prefect server. The decision's ``info["empty_book"]`` must reach
the health JSON (WARNING + field, the daily flow's and the replay's alike), the alert log, the
``run daily`` line, the replay's summary, table and console line, ``hcp status`` and the dashboard.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from flows.cli import app
from tasks.alerts import read_alerts
from tasks.health.checks import empty_book_line
from tasks.paths import Paths
from tasks.plan.build import zeroing_step
from tests.conftest import use_home

DAY = "2021-12-30"
SPAN = ("2021-12-27", "2021-12-30")
EMPTY_ENV = {"HCP_GUARDRAILS__MIN_POSITION_CASH": "1000000000", "COLUMNS": "400"}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def flat(text: str) -> str:
    return " ".join(text.split())


def _env(mp: pytest.MonkeyPatch, paths: Paths) -> None:
    use_home(mp, paths)
    for key, value in EMPTY_ENV.items():
        mp.setenv(key, value)


@pytest.fixture(scope="module")
def ran(trained_home, tmp_path_factory):
    """``hcp run daily`` (twice: the second is the cached re-run) and then ``hcp replay --force``
    over a span ending on the same session, with every BUY dropped by the minimum order."""
    paths = Paths(tmp_path_factory.mktemp("empty_book") / "home")
    shutil.copytree(trained_home.home, paths.home)
    with pytest.MonkeyPatch.context() as mp, prefect_test_harness(server_startup_timeout=120):
        _env(mp, paths)
        daily = invoke("run", "daily", "--date", DAY)
        health_path = paths.reports / "health" / f"daily_health_{DAY}.json"
        daily_health = json.loads(health_path.read_text())
        again = invoke("run", "daily", "--date", DAY)
        replay = invoke("replay", "--start", SPAN[0], "--end", SPAN[1], "--force")
    return {"paths": paths, "daily": daily, "again": again, "replay": replay,
            "daily_health": daily_health}


@pytest.fixture
def home(ran, monkeypatch) -> Paths:
    _env(monkeypatch, ran["paths"])
    return ran["paths"]


def test_daily_health_warns_with_the_step_and_the_figures(ran):
    health, paths = ran["daily_health"], ran["paths"]
    eb = health["empty_book"]
    assert eb is not None and eb["orders"] == 0 and eb["buy_signals"] > 0
    assert sum(eb["by_step"].values()) == eb["buy_signals"]
    assert eb["step"] == next(iter(eb["by_step"])) == max(eb["by_step"], key=eb["by_step"].get)
    assert eb["message"].startswith(f"empty book: {eb['buy_signals']} BUY signal(s), no order")
    assert health["summary"]["status"] == "WARNING"
    assert health["summary"]["warnings"].count(eb["message"]) == 1
    # the tally is the audit's: every symbol the fusion said BUY for, by the step that zeroed it
    audit = pd.read_parquet(paths.val / "plans" / DAY / "trade_plan_audit.parquet")
    buys = audit.loc[audit["action"] == "BUY"]
    assert len(buys) == eb["buy_signals"] and not buys["taken"].any()
    assert Counter(zeroing_step(r.split(";")) for r in buys["reasons"]) == Counter(eb["by_step"])
    plan = pd.read_csv(paths.val / "plans" / DAY / "trade_plan.csv")
    assert not (plan["action"] == "BUY").any()


def test_replay_health_comes_from_the_same_code(ran):
    """The replay's session (the one session decision) writes the same empty-book finding as
    the flow, under the replay's own root."""
    root = ran["paths"].reports / "replay" / f"{SPAN[0]}_{SPAN[1]}" / "sandbox"
    replayed = json.loads((root / "reports" / "health" / f"daily_health_{DAY}.json").read_text())
    assert replayed["empty_book"] == ran["daily_health"]["empty_book"]
    assert replayed["empty_book"]["message"] in replayed["summary"]["warnings"]


def test_daily_flow_raises_one_empty_book_alert(ran):
    eb = ran["daily_health"]["empty_book"]
    alerts = [a for a in read_alerts(ran["paths"], DAY) if a["code"] == "empty_book"]
    assert len(alerts) == 1  # the cached re-run does not repeat it
    assert alerts[0]["text"] == eb["message"] and alerts[0]["level"] == "WARN"
    assert alerts[0]["data"]["by_step"] == eb["by_step"]


def test_empty_book_is_a_notified_code(home):
    from tasks.operator.settings import NotifySettings
    from tasks.settings import load_settings

    assert "empty_book" in NotifySettings().codes
    assert "empty_book" in load_settings().operator.notify.codes  # config/app.yaml


def test_run_daily_prints_one_empty_book_line(ran):
    eb = ran["daily_health"]["empty_book"]
    steps = ", ".join(f"{k} {v}" for k, v in eb["by_step"].items())
    line = f"EMPTY BOOK: {eb['buy_signals']} BUY signals, no order — zeroed by {steps}"
    assert empty_book_line(eb) == line
    for res in (ran["daily"], ran["again"]):
        assert res.exit_code == 0, res.output
        out = flat(res.output)
        assert out.count(line) == 1, res.output
        assert f"WARNING {eb['message']}" not in out  # not repeated as a WARNING line
    assert "unchanged" in ran["again"].output


def test_replay_summary_table_and_console_count_empty_books(ran):
    res = ran["replay"]
    assert res.exit_code == 0, res.output
    folder = ran["paths"].reports / "replay" / f"{SPAN[0]}_{SPAN[1]}"
    summary = json.loads((folder / "summary.json").read_text())
    table = pd.read_csv(folder / "sessions.csv", keep_default_na=False)
    assert "empty_book_step" in table and len(table) == summary["sessions"] == 4
    books = {d: json.loads((folder / "sandbox" / "reports" / "health" / f"daily_health_{d}.json")
                           .read_text())["empty_book"] for d in table["date"]}
    assert dict(zip(table["date"], table["empty_book_step"], strict=True)) == {
        d: (b or {}).get("step", "") for d, b in books.items()}
    empty = [b for b in books.values() if b]
    assert summary["empty_book_sessions"] == len(empty) >= 1
    assert summary["empty_book_by_step"] == dict(Counter(b["step"] for b in empty))
    signals = Counter()
    for b in empty:
        signals.update(b["by_step"])
    assert summary["empty_book_signals_by_step"] == dict(signals)
    why = ", ".join(f"{k} {v}" for k, v in summary["empty_book_by_step"].items())
    assert (f"EMPTY BOOK in {len(empty)} of 4 session(s) (BUY signals, no order); "
            f"zeroed by (sessions): {why}") in flat(res.output)


def test_status_json_and_terminal_show_the_latest_empty_book(home, ran):
    eb = json.loads((home.reports / "health" / f"daily_health_{DAY}.json").read_text())["empty_book"]
    res = invoke("status", "--json")
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output)["empty_book"]
    assert shown["session"] == DAY and shown["message"] == eb["message"]
    assert shown["by_step"] == eb["by_step"] and shown["line"] == empty_book_line(eb)
    term = invoke("status")
    assert term.exit_code == 0, term.output
    assert f"session {DAY}: {empty_book_line(eb)}" in flat(term.output)


def test_dashboard_shows_the_empty_book_banner(home):
    from tasks.operator.dashboard import render_dashboard
    from tasks.operator.status import snapshot
    from tasks.settings import load_settings

    html = render_dashboard(snapshot(home, load_settings()))
    eb = json.loads((home.reports / "health" / f"daily_health_{DAY}.json").read_text())["empty_book"]
    assert 'id="empty-book"' in html and f"Session {DAY}: {empty_book_line(eb)}" in html


def test_status_and_dashboard_are_quiet_when_the_book_is_not_empty(tmp_path):
    from tasks.operator.status import empty_book

    paths = Paths(tmp_path)
    assert empty_book(paths) is None  # nothing planned yet
    folder = paths.reports / "health"
    folder.mkdir(parents=True)
    eb = {"buy_signals": 3, "orders": 0, "step": "gate:high_vol", "by_step": {"gate:high_vol": 3},
          "message": "empty book: 3 BUY signal(s), no order; zeroed by gate:high_vol 3"}
    (folder / "daily_health_2021-12-29.json").write_text(json.dumps({"date": "2021-12-29",
                                                                      "empty_book": eb}))
    assert empty_book(paths)["line"] == ("EMPTY BOOK: 3 BUY signals, no order — zeroed by "
                                         "gate:high_vol 3")
    # the latest session had orders: its null empty_book wins over the day before's
    (folder / "daily_health_2021-12-30.json").write_text(json.dumps({"date": "2021-12-30",
                                                                      "empty_book": None}))
    assert empty_book(paths) is None


def test_replay_tally_and_line_without_an_empty_book():
    from flows.replay import empty_book_summary, empty_book_tally

    tally = empty_book_tally([None, None])
    assert tally == {"empty_book_sessions": 0, "empty_book_by_step": {},
                     "empty_book_signals_by_step": {}}
    assert empty_book_summary({"sessions": 2, **tally}) is None
    eb = {"step": "size:kelly_cap", "by_step": {"size:kelly_cap": 5, "gate:high_vol": 1}}
    two = empty_book_tally([eb, None, {"step": "gate:high_vol", "by_step": {"gate:high_vol": 4}}])
    assert two == {"empty_book_sessions": 2,
                   "empty_book_by_step": {"gate:high_vol": 1, "size:kelly_cap": 1},
                   "empty_book_signals_by_step": {"gate:high_vol": 5, "size:kelly_cap": 5}}
