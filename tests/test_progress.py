"""Progress reporting of long commands: steps counted against a known total, an ETA from the
completed steps, and plain lines where the output is not a terminal."""

from __future__ import annotations

import io

import pytest

from tasks.data.ingest import import_bars
from tasks.data.sources import DemoSource
from tasks.paths import Paths
from tasks.progress import Eta, LineProgress, Steps, clock_text, progress_line, remaining_seconds
from tasks.settings import load_settings


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_steps_count_up_to_the_total() -> None:
    seen: list[tuple[str, int, int | None]] = []
    say = Steps(lambda *a: seen.append(a), total=3)
    for msg in ("a", "b", "c"):
        say(msg)
    say.finish()
    assert seen == [("a", 0, 3), ("b", 1, 3), ("c", 2, 3), ("done", 3, 3)]


def test_import_reports_every_step_and_ends_complete(tmp_path) -> None:
    paths = Paths(tmp_path)
    seen: list[tuple[str, int, int | None]] = []
    src = DemoSource(paths.demo, seed=3, n_symbols=3, n_sectors=2, start="2020-01-02", end="2020-09-30")
    res = import_bars(src, load_settings(), paths, progress=lambda *a: seen.append(a))
    done = [d for _, d, _ in seen]
    assert done == sorted(done) and seen[-1][1] == seen[-1][2] == 5
    assert [m for m, _, _ in seen][:2] == ["reading demo", f"validating {res.rows_in:,} rows"]


def test_remaining_time_is_the_mean_step_times_the_steps_left() -> None:
    assert remaining_seconds(70.0, 12, 60) == pytest.approx(280.0)  # 70/12 s a step, 48 left
    assert remaining_seconds(70.0, 0, 60) is None                   # no step done yet
    assert remaining_seconds(70.0, 12, None) is None                # total unknown
    assert remaining_seconds(70.0, 60, 60) == 0.0


def test_remaining_time_counts_down_during_a_step_but_not_below_the_steps_after_it() -> None:
    per_step = 70.0 / 12
    assert remaining_seconds(70.0, 12, 60, since_done=3.0) == pytest.approx(277.0)
    # a step that overruns the mean: what is left is still the 47 steps after it
    assert remaining_seconds(70.0, 12, 60, since_done=100.0) == pytest.approx(47 * per_step)
    assert remaining_seconds(70.0, 59, 60, since_done=1000.0) == 0.0


def test_clock_text() -> None:
    assert clock_text(None) == "-:--:--"
    assert clock_text(280.0) == "0:04:40"
    assert clock_text(3 * 3600 + 61.4) == "3:01:01"


def test_eta_known_once_a_step_is_done_even_when_steps_are_long() -> None:
    """Rich's estimate looks at the last 30 s only, so with steps longer than that it stayed
    blank for a whole training; this one does not."""
    clock = Clock()
    eta = Eta(clock)
    eta.update(0, None)
    clock.now += 5
    eta.update(0, 10)                  # the total becomes known: still no step done
    assert eta.remaining() is None
    for done in range(1, 4):
        clock.now += 95                # every step takes far longer than 30 s
        eta.update(done, 10)
        assert eta.remaining() == pytest.approx((5 + 95 * done) / done * (10 - done))
    clock.now += 20                    # within the fourth step: the estimate counts down
    assert eta.remaining() == pytest.approx(290 / 3 * 7 - 20)
    assert eta.elapsed() == pytest.approx(310.0)


def test_progress_line_format() -> None:
    clock = Clock()
    eta = Eta(clock)
    assert progress_line("replay", "", eta) == "replay: 0/? · elapsed 0:00:00 · eta -:--:--"
    clock.now += 70
    eta.update(12, 60)
    assert progress_line("train", "steps", eta, "short: fold 3/12 test 2014") == (
        "train: 12/60 steps · elapsed 0:01:10 · eta 0:04:40 · short: fold 3/12 test 2014")
    eta.update(60, 60)
    assert progress_line("train", "steps", eta, "done") == (
        "train: 60/60 steps · elapsed 0:01:10 · done")


def test_line_progress_writes_about_every_5_percent_and_the_end() -> None:
    clock, out = Clock(), io.StringIO()
    log = LineProgress("train", out, every_s=3600, clock=clock)
    log("features and labels", 0, None)
    for done in range(1, 61):
        clock.now += 10
        log(f"step {done + 1}", done, 60)
    lines = out.getvalue().splitlines()
    # the first call, then every 3 steps (5 % of 60): 3, 6, ..., 60
    assert len(lines) == 1 + 20
    assert lines[0] == "train: 0/? steps · elapsed 0:00:00 · eta -:--:-- · features and labels"
    assert lines[4] == "train: 12/60 steps · elapsed 0:02:00 · eta 0:08:00 · step 13"
    assert lines[-1] == "train: 60/60 steps · elapsed 0:10:00 · step 61"


def test_line_progress_writes_at_least_every_every_s_seconds() -> None:
    clock, out = Clock(), io.StringIO()
    log = LineProgress("replay", out, unit="sessions", every_s=30, clock=clock)
    for done in range(0, 1001):
        log(f"session {done}", done, 1000)   # 5 % = 50 sessions, at 1 s each
        clock.now += 1
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 + 1000 // 30 + 1                  # start, every 30 s, the end
    assert lines[1].startswith("replay: 30/1000 sessions · elapsed 0:00:30 · eta 0:16:10")
    assert lines[-1].startswith("replay: 1000/1000 sessions · elapsed 0:16:40 · session 1000")


def test_command_progress_is_plain_lines_when_not_a_terminal(capsys) -> None:
    """``hcp train`` / ``hcp replay`` / ``hcp data import`` into a file: lines, not a bar."""
    from flows.cli import step_bar

    with step_bar("train") as update:
        say = Steps(update)
        say("features and labels")
        say.total = 3
        say("short: fold 1/2 test 2019")
        say("short: fold 2/2 test 2020")
        say.finish("baseline b written")
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("train: 0/? steps · elapsed 0:00:00 · eta -:--:-- · features")
    assert err[1].startswith("train: 1/3 steps · elapsed ") and "short: fold 1/2" in err[1]
    assert err[-1].startswith("train: 3/3 steps · elapsed ") and err[-1].endswith(
        " · baseline b written")
    assert "eta -:--:--" not in err[1]


def test_command_progress_draws_a_bar_with_eta_on_a_terminal(monkeypatch) -> None:
    from rich.console import Console

    import flows.cli as cli

    screen = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=screen, force_terminal=True,
                                                      color_system=None, width=200))
    with cli.step_bar("train") as update:
        update("features and labels", 0, None)
        update("short: fold 1/2", 1, 3)
        update("done", 3, 3)
    text = screen.getvalue()
    assert "train: done" in text and "3/3" in text and "ETA 0:00:00" in text
