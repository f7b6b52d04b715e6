"""Sessions in order, and a book and a kill switch that fail closed.

An unfinished session blocks the later ones (intraday and daily) until it is finished (the
re-run resumes it, orders exactly once) or abandoned (logged); a session never rewrites a later
book; a gap between the book and the session asked for is refused unless an explicit, logged
catch-up marks the missing sessions skipped; a missing or damaged book, kill switch or session
record is one line naming the file and its repair, never an empty book or an armed switch.
"""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest

from tasks.data.calendar import sessions as calendar_sessions
from tasks.execution import ledger
from tasks.execution.runner import run_session
from tasks.execution.tradelog import read_records, verify
from tasks.paths import Paths
from tasks.statefiles import StateFileError, read_jsonl
from tests.exec_helpers import PREV, SESSION, settings, write_book
from tests.state_helpers import (
    DAMAGE,
    NEXT,
    THIRD,
    bars_file,
    child,
    damage,
    hcp,
    hcp_daily,
    home,
    one_line,
    read,
    session_bars,
    state,
)

AT = "2020-03-12T08:00:00Z"


def session_book(paths: Paths, cfg, day: str):
    """The book a daily run for ``day`` sizes against (tasks.state.session_book)."""
    from tasks.state import session_book as book_of_session

    return book_of_session(paths, cfg, day)


def _results(paths: Paths) -> Counter:
    return Counter((r["order_id"], "result" if r["event"] in ("fill", "exit", "unfilled")
                    else r["event"]) for r in read_records(paths) if r["event"] != "cancel")


def _killed_mid_session(tmp_path) -> tuple[Paths, dict]:
    """Session D killed (SIGKILL) right after its 5th trade-log line."""
    paths = home(tmp_path / "home")
    files = {d: bars_file(tmp_path, d) for d in (SESSION, NEXT, THIRD)}
    res = child(paths, SESSION, files[SESSION],
                kill_at="tasks.execution.tradelog:TradeLog.append:5:after")
    assert res.returncode == -9, res.stderr
    assert len(read_records(paths)) == 5
    assert read(state(paths) / "execution" / f"{SESSION}.json")["status"] == "running"
    return paths, files


# --- finding 1: an unfinished session is neither skipped nor rolled back -------------------

def test_unfinished_session_blocks_the_next_one_then_resumes_exactly_once(tmp_path):
    paths, files = _killed_mid_session(tmp_path)
    cfg = settings()
    with pytest.raises(ledger.SessionOrderError) as err:  # the flow's own check
        run_session(paths, cfg, NEXT, bars=pd.read_parquet(files[NEXT]))
    msg = str(err.value)
    assert msg.startswith(f"session {SESSION} was started but not finished")
    assert f"hcp run intraday --date {SESSION}`" in msg and "--abandon --by NAME --reason" in msg
    line = one_line(hcp(paths, "run", "intraday", "--date", NEXT, "--bars", str(files[NEXT])))
    assert line == f"error: {msg}"
    assert not (state(paths) / "execution" / f"{NEXT}.json").exists()
    # the daily run for D (sized against the book of D) is refused too, never the account cash
    with pytest.raises(ledger.SessionOrderError, match=f"session {SESSION} was started"):
        session_book(paths, cfg, SESSION)
    daily = one_line(hcp_daily(paths, SESSION))
    assert f"the daily run for {SESSION} is not run before that" in daily

    run_session(paths, cfg, SESSION, bars=pd.read_parquet(files[SESSION]))  # resumes
    counts = _results(paths)
    intents = {o for (o, e) in counts if e == "intent"}
    assert intents and all(counts[(o, "intent")] == 1 and counts[(o, "result")] == 1
                           for o in intents), counts
    assert verify(paths).ok
    run_session(paths, cfg, NEXT, bars=pd.read_parquet(files[NEXT]))
    book = read(state(paths) / "portfolio.json")
    assert book["as_of_session"] == NEXT
    again = run_session(paths, cfg, SESSION, bars=pd.read_parquet(files[SESSION]))
    assert again.cached  # a no-op that says so: never a rewrite of the later book
    assert read(state(paths) / "portfolio.json") == book


def test_a_session_never_rewrites_a_later_book(tmp_path):
    """An unfinished session left behind by a later committed one (state from before the
    order was enforced): finishing it is refused; it can only be closed, without the book."""
    paths, files = _killed_mid_session(tmp_path)
    rec = read(state(paths) / "execution" / f"{SESSION}.json")
    later = read(state(paths) / "portfolio.json") | {"as_of_session": NEXT}
    (state(paths) / "portfolio.json").write_text(json.dumps(later))
    (state(paths) / "execution" / f"{NEXT}.json").write_text(json.dumps(
        rec | {"session": NEXT, "status": "done", "holdings": {}, "working": [],
               "sending": None}))
    with pytest.raises(ledger.SessionOrderError, match="would rewrite a later book"):
        run_session(paths, settings(), SESSION, bars=pd.read_parquet(files[SESSION]))
    done = hcp(paths, "run", "intraday", "--date", SESSION, "--abandon", "--by", "ops",
               "--reason", "left behind")
    assert done.exit_code == 0, done.output
    assert read(state(paths) / "portfolio.json") == later
    assert read(state(paths) / "execution" / f"{SESSION}.json")["status"] == "abandoned"


def test_abandon_closes_the_session_as_it_stands_and_is_logged(tmp_path):
    paths, files = _killed_mid_session(tmp_path)
    assert "needs --by NAME and --reason TEXT" in one_line(
        hcp(paths, "run", "intraday", "--date", SESSION, "--abandon"))
    res = hcp(paths, "run", "intraday", "--date", SESSION, "--abandon", "--by", "ops",
              "--reason", "feed lost for the day")
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"session {SESSION} abandoned by ops: closed as it stood")
    rec = read(state(paths) / "execution" / f"{SESSION}.json")
    assert rec["status"] == "abandoned" and rec["working"] == [] and rec["sending"] is None
    fills = Counter()
    for r in read_records(paths, SESSION):
        if r["event"] == "fill":
            fills[r["symbol"]] += r["qty"]
    book = read(state(paths) / "portfolio.json")
    held = {p["symbol"]: p["qty"] for p in book["positions"]}
    assert book["as_of_session"] == SESSION and fills
    assert all(held[s] == q for s, q in fills.items())  # every fill of D is in the book
    repairs = read_jsonl(state(paths) / "repairs.jsonl").records
    assert [(r["file"], r["action"], r["by"]) for r in repairs] == [
        (f"execution/{SESSION}.json", "abandon", "ops")]
    assert read(state(paths) / "sessions" / f"{SESSION}.json")["abandoned"]["reason"] == \
        "feed lost for the day"
    run_session(paths, settings(), NEXT, bars=pd.read_parquet(files[NEXT]))
    assert read(state(paths) / "portfolio.json")["as_of_session"] == NEXT
    again = one_line(hcp(paths, "run", "intraday", "--date", SESSION, "--bars",
                         str(files[SESSION])))
    assert f"session {SESSION} was abandoned by ops" in again


# --- finding 2: a missing book is never an empty book -------------------------------------

def test_missing_book_stops_every_command_and_is_rebuilt_from_the_record(tmp_path):
    paths = home(tmp_path / "home")
    files = {d: bars_file(tmp_path, d) for d in (SESSION, NEXT)}
    run_session(paths, settings(), SESSION, bars=pd.read_parquet(files[SESSION]))
    before = read(state(paths) / "portfolio.json")
    assert len(before["positions"]) == 4
    (state(paths) / "portfolio.json").unlink()
    lines = [one_line(hcp(paths, "status")),
             one_line(hcp(paths, "run", "intraday", "--date", NEXT, "--bars", str(files[NEXT]))),
             one_line(hcp_daily(paths, NEXT))]
    path = state(paths) / "portfolio.json"
    for line in lines:
        assert line == (f"error: {path}: missing although a committed execution record shows "
                        "executed sessions (it is never taken for an empty book); rebuild it "
                        "from the last committed execution record: hcp state repair portfolio "
                        "--by NAME --reason TEXT")
    with pytest.raises(StateFileError):
        session_book(paths, settings(), NEXT)
    check = hcp(paths, "state", "check")
    assert check.exit_code == 2 and "damaged  portfolio" in check.output
    fixed = hcp(paths, "state", "repair", "portfolio", "--by", "ops", "--reason", "disk loss")
    assert fixed.exit_code == 0, fixed.output
    logged = read_jsonl(state(paths) / "repairs.jsonl").records[-1]
    assert logged["action"].startswith("portfolio.json (missing although") and \
        f"rebuilt from execution/{SESSION}.json ('done')" in logged["action"]
    assert "nothing to repair" in one_line(hcp(paths, "state", "repair", "portfolio", "--by",
                                               "ops", "--reason", "again"))
    after = read(path)
    assert after["as_of_session"] == SESSION and after["positions"] == before["positions"]
    assert after["net_liquidity"] == pytest.approx(before["net_liquidity"], abs=1e-6)
    assert read_jsonl(state(paths) / "repairs.jsonl").records[-1]["file"] == "portfolio"
    run_session(paths, settings(), NEXT, bars=pd.read_parquet(files[NEXT]))


# --- finding 3: gaps are refused unless an explicit catch-up is asked for -------------------

def test_gap_between_the_book_and_the_session_is_refused_or_caught_up(tmp_path):
    paths = home(tmp_path / "home")
    write_book(paths, 90_000.0, [{"symbol": "H", "qty": 100, "price": 100.0}], as_of="2020-02-03")
    days = calendar_sessions("XNYS", "2020-02-04", "2020-03-06")
    frame = session_bars(SESSION)
    with pytest.raises(ledger.SessionOrderError) as err:
        run_session(paths, settings(), SESSION, bars=frame)
    assert f"{len(days)} session(s) before {SESSION} were not executed (first: 2020-02-04)" \
        in str(err.value) and "--catch-up --by NAME --reason TEXT" in str(err.value)
    line = one_line(hcp(paths, "run", "intraday", "--date", SESSION, "--bars",
                        str(bars_file(tmp_path, SESSION))))
    assert "the book (data/state/portfolio.json) is at session 2020-02-03" in line
    assert "needs --by NAME and --reason TEXT" in one_line(
        hcp(paths, "run", "intraday", "--date", SESSION, "--catch-up"))
    with pytest.raises(ledger.SessionOrderError, match=f"{len(days)} session"):
        session_book(paths, settings(), SESSION)  # the daily run for D is refused alike
    from tasks.execution.runner import CatchUp

    res = run_session(paths, settings(), SESSION, bars=frame,
                      catch_up=CatchUp("ops", "feed outage in February", AT))
    assert not res.cached
    marked = [read(state(paths) / "execution" / f"{d.date()}.json") for d in days]
    assert {m["status"] for m in marked} == {"skipped"}
    assert marked[-1]["holdings"]["H"]["sessions_held"] == len(days)
    assert read(state(paths) / "portfolio.json")["as_of_session"] == SESSION
    repairs = read_jsonl(state(paths) / "repairs.jsonl").records
    assert len(repairs) == 1 and repairs[0]["action"].startswith(
        f"catch-up: {len(days)} session(s) 2020-02-04..2020-03-06 marked skipped")


def test_daily_sizes_against_the_book_of_its_own_session(tmp_path):
    paths = home(tmp_path / "home")
    cfg = settings()
    for day in (SESSION, NEXT):
        run_session(paths, cfg, day, bars=session_bars(day))
    book, info = session_book(paths, cfg, NEXT)  # the book after D's session: portfolio.json
    assert info["source"].endswith("portfolio.json") and info["as_of_session"] == NEXT
    _, info = session_book(paths, cfg, THIRD)  # intraday of D not run yet: the book before D
    assert info["as_of_session"] == NEXT
    _, past = session_book(paths, cfg, SESSION)  # a past re-run: D's committed record
    assert past["source"].endswith(f"execution/{SESSION}.json") and past["as_of_session"] == SESSION
    assert past["net_liquidity"] == pytest.approx(read(
        state(paths) / "sessions" / f"{SESSION}.json")["end_net_liquidity"])
    with pytest.raises(ledger.SessionOrderError, match=f"session {PREV} has no committed"):
        session_book(paths, cfg, PREV)
    with pytest.raises(ledger.SessionOrderError, match="1 session\\(s\\) before 2020-03-12"):
        session_book(paths, cfg, "2020-03-12")
    assert "has no committed execution record" in one_line(hcp_daily(paths, PREV))


# --- finding 6 and the damaged-file matrix -------------------------------------------------

def _tripped(tmp_path) -> Paths:
    """Session D committed with its kill switch tripped (500 H fall 6%)."""
    paths = home(tmp_path / "home", plan_for=(), h_qty=500, cash=50_000.0)
    res = run_session(paths, settings(), SESSION, bars=session_bars(SESSION, "", drop=0.06))
    assert res.summary["kill_switch"] is True
    return paths


def test_deleted_kill_switch_still_shows_the_trip(tmp_path):
    paths = _tripped(tmp_path)
    (state(paths) / "kill_switch.json").unlink()
    res = hcp(paths, "status", "--json")
    assert res.exit_code == 0, res.output
    ks = json.loads(res.output)["kill_switch"]
    assert ks["tripped"] is True and ks["session"] == SESSION
    assert ks["source"] == f"data/state/execution/{SESSION}.json"
    text = hcp(paths, "status")
    assert text.exit_code == 0 and "kill switch: TRIPPED at" in text.output
    check = hcp(paths, "state", "check", "--json")
    entry = next(e for e in json.loads(check.output) if e["kind"] == "kill_switch")
    assert entry["state"] == "missing" and "counts as tripped" in entry["detail"]
    fixed = hcp(paths, "state", "repair", "kill_switch", "--by", "ops", "--reason", "restore")
    assert fixed.exit_code == 0, fixed.output
    logged = read_jsonl(state(paths) / "repairs.jsonl").records[-1]
    assert logged["action"] == f"kill_switch.json rebuilt from execution/{SESSION}.json: tripped"
    assert read(state(paths) / "kill_switch.json")["tripped"] is True


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("which", ["portfolio", "kill_switch", "execution"])
def test_damaged_state_files_are_named_in_one_line(tmp_path, which, how):
    paths = _tripped(tmp_path)
    target = {"portfolio": state(paths) / "portfolio.json",
              "kill_switch": state(paths) / "kill_switch.json",
              "execution": state(paths) / "execution" / f"{SESSION}.json"}[which]
    damage(target, how)
    status = hcp(paths, "status")
    if which == "kill_switch" and how == "deleted":  # counts as tripped, blocks nothing
        assert status.exit_code == 0 and "TRIPPED" in status.output
        return
    if which == "execution" and how == "deleted":
        # a committed session's record is history: the book stays the authority
        assert status.exit_code == 0, status.output
        return
    line = one_line(status)
    run = hcp(paths, "run", "intraday", "--date", NEXT, "--bars", str(bars_file(tmp_path, NEXT)),
              "--without-plan")
    assert one_line(run) == line
    assert str(target) in line
    remedy = {"portfolio": "hcp state repair portfolio --by NAME --reason TEXT",
              "kill_switch": "hcp state repair kill_switch --by NAME --reason TEXT",
              "execution": f"hcp run intraday --date {SESSION} --abandon"}[which]
    assert remedy in line
    if which == "portfolio":
        with pytest.raises(StateFileError, match="portfolio.json"):
            session_book(paths, settings(), NEXT)


def test_a_deleted_record_of_an_unfinished_session_is_named(tmp_path):
    paths, files = _killed_mid_session(tmp_path)
    (state(paths) / "execution" / f"{SESSION}.json").unlink()
    line = one_line(hcp(paths, "run", "intraday", "--date", NEXT, "--bars", str(files[NEXT])))
    assert (f"session {SESSION} was started but not finished (the trade log has its orders but "
            f"data/state/execution/{SESSION}.json is missing)") in line
    res = hcp(paths, "run", "intraday", "--date", SESSION, "--abandon", "--by", "ops",
              "--reason", "record lost")
    assert res.exit_code == 0 and "are not in the book: reconcile them with the broker" \
        in res.output
    assert read(state(paths) / "execution" / f"{SESSION}.json")["status"] == "abandoned"
    run_session(paths, settings(), NEXT, bars=pd.read_parquet(files[NEXT]))
