"""Progress reporting of long commands: steps counted against a known total."""

from __future__ import annotations

from tasks.data.ingest import import_bars
from tasks.data.sources import DemoSource
from tasks.paths import Paths
from tasks.progress import Steps
from tasks.settings import load_settings


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
