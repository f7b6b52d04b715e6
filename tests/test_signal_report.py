"""Signal-quality report (tasks/models/signal_report.py) on tiny hand-computed cases."""

from __future__ import annotations

import base64
import math
import re

import numpy as np
import pandas as pd
import pytest

from tasks.models.metrics import newey_west_t
from tasks.models.signal_report import (
    decile_returns,
    ic_by_year,
    permutation_importance,
    signal_report_html,
    signal_summary,
    signal_tables,
    top_decile_turnover,
    write_signal_figures,
)

SCALE = (1.0, 2.0, 3.0)  # session d's simple returns are SCALE[d] * 1% * (i - 4) for name i


def _frame(dates, names, simple, score=None, horizon="short") -> pd.DataFrame:
    """OOS rows: ``simple[d][i]`` is name i's forward simple return at dates[d]."""
    rows = []
    for d, day in enumerate(pd.to_datetime(dates)):
        for i, name in enumerate(names):
            r = simple[d][i]
            rows.append({"symbol": name, "date": day, "horizon": horizon,
                         "fwd_return": math.log1p(r),
                         "p_cal": math.log1p(r) if score is None else score[d][i]})
    return pd.DataFrame(rows)


@pytest.fixture
def perfect() -> pd.DataFrame:
    """3 sessions x 10 names, score = forward return (plus a NaN-score row, e.g. fold 1)."""
    names = [f"S{i}" for i in range(10)]
    simple = [[s * 0.01 * (i - 4) for i in range(10)] for s in SCALE]
    frame = _frame(["2020-01-02", "2020-01-03", "2020-01-06"], names, simple)
    extra = frame.iloc[[0]].assign(symbol="NAN_SCORE", p_cal=np.nan, fwd_return=0.5)
    other = frame.assign(horizon="mid", p_cal=-frame["p_cal"])  # another horizon: ignored
    return pd.concat([frame, extra, other], ignore_index=True)


def test_perfect_score_has_ic_one_and_hand_computed_spread(perfect):
    years = ic_by_year(perfect, "short")
    assert list(years["year"]) == ["2020", "all"]
    assert list(years["sessions"]) == [3, 3]
    assert years["ic_mean"].tolist() == pytest.approx([1.0, 1.0])

    res = decile_returns(perfect, "short", cost_bps=5.0, h=1)
    dec = res["deciles"]
    assert dec["decile"].tolist() == list(range(1, 11))
    assert dec["trades"].tolist() == pytest.approx([3.0] * 10)
    # decile k holds name k-1: mean over sessions of s * 1% * (i - 4), mean s = 2
    assert dec["mean_return"].tolist() == pytest.approx([0.02 * (i - 4) for i in range(10)])
    # the session's mean return is s * 1% * 0.5
    assert dec["mean_excess"].tolist() == pytest.approx([0.02 * (i - 4.5) for i in range(10)])
    # top - bottom = s * 1% * (5 - (-4)) = 0.09 s; cost 4 sides x 5 bp = 0.0020
    net = res["spread"]
    assert net.tolist() == pytest.approx([0.088, 0.178, 0.268])
    ls = res["long_short"]
    assert ls["ls_cost"] == pytest.approx(0.002)
    assert ls["ls_gross_mean"] == pytest.approx(0.18)
    assert ls["ls_net_mean"] == pytest.approx(0.178)
    # h = 1: lag 0, classic t = mean / (sd / sqrt 3) with sd = 0.09
    assert ls["ls_t_nw"] == pytest.approx(0.178 / 0.09 * math.sqrt(3))
    assert ls["periods"] == 3
    assert ls["ls_sharpe"] == pytest.approx(0.178 / 0.09 * math.sqrt(252))
    # h = 2: non-overlapping periods are sessions 1 and 3: 0.088, 0.268
    ls2 = decile_returns(perfect, "short", cost_bps=5.0, h=2)["long_short"]
    assert ls2["periods"] == 2
    assert ls2["ls_sharpe"] == pytest.approx(0.178 / (0.18 / math.sqrt(2)) * math.sqrt(126))
    # short horizon (h = 5): one non-overlapping period, no Sharpe; NW lag 4 on the 3 sessions
    ls5 = decile_returns(perfect, "short")["long_short"]
    assert ls5["periods"] == 1 and math.isnan(ls5["ls_sharpe"])
    assert ls5["ls_t_nw"] == pytest.approx(newey_west_t([0.088, 0.178, 0.268], 4))


def test_reversed_score_has_ic_minus_one(perfect):
    years = ic_by_year(perfect, "mid")
    assert years["ic_mean"].tolist() == pytest.approx([-1.0, -1.0])
    ls = decile_returns(perfect, "mid", cost_bps=0.0)["long_short"]
    assert ls["ls_gross_mean"] == pytest.approx(-0.18)
    assert ls["ls_net_mean"] == pytest.approx(-0.18)


def test_random_score_has_small_ic():
    rng = np.random.default_rng(7)
    n_dates, n_names = 20, 100  # 2,000 draws
    dates = pd.bdate_range("2021-01-04", periods=n_dates)
    frame = pd.DataFrame({"symbol": np.tile([f"S{i}" for i in range(n_names)], n_dates),
                          "date": np.repeat(dates, n_names), "horizon": "short",
                          "fwd_return": rng.normal(0, 0.03, n_dates * n_names),
                          "p_cal": rng.uniform(0, 1, n_dates * n_names)})
    row = ic_by_year(frame, "short").iloc[-1]
    assert row["year"] == "all" and row["sessions"] == n_dates
    assert abs(row["ic_mean"]) < 0.05
    assert abs(row["ic_t_nw"]) < 3.0
    summary = signal_summary(frame, "short", 4)
    assert summary["ic_mean"] == pytest.approx(row["ic_mean"])
    assert abs(summary["ls_gross_mean"]) < 0.01


def test_ic_by_year_rows_and_newey_west():
    names = [f"S{i}" for i in range(10)]
    base = [[0.01 * (i - 4) for i in range(10)]]
    up = _frame(["2010-12-29", "2010-12-30", "2010-12-31"], names, base * 3)
    down = _frame(["2011-01-03", "2011-01-04"], names, base * 2,
                  score=[[-math.log1p(r) for r in base[0]]] * 2)
    years = ic_by_year(pd.concat([up, down]), "short", nw_lag=0)
    assert list(years["year"]) == ["2010", "2011", "all"]
    assert list(years["sessions"]) == [3, 2, 5]
    assert years["ic_mean"].tolist() == pytest.approx([1.0, -1.0, 0.2])
    assert years["ic_positive"].tolist() == pytest.approx([1.0, 0.0, 0.6])
    # ICs 1, 1, 1, -1, -1: sd = sqrt(1.2), t = 0.2 / (sqrt(1.2) / sqrt(5))
    t = 0.2 * math.sqrt(5) / math.sqrt(1.2)
    assert years["ic_t_nw"].iloc[-1] == pytest.approx(t)
    assert years["ic_se"].iloc[-1] == pytest.approx(0.2 / t)
    assert math.isnan(years["ic_t_nw"].iloc[0])  # constant IC: no standard error
    # default lag is h - 1 = 4 for the short horizon
    default = ic_by_year(pd.concat([up, down]), "short")
    assert default["ic_t_nw"].iloc[-1] == pytest.approx(newey_west_t([1, 1, 1, -1, -1], 4))


def test_tied_scores_share_the_decile_by_weight():
    # 20 names: the top three tie; positions 18..20 form the tie group, the top decile is
    # positions 19..20, so each tied name weighs 2/3 in decile 10 and 1/3 in decile 9
    names = [f"S{i:02d}" for i in range(20)]
    simple = [[0.001 * i for i in range(17)] + [0.03, 0.06, 0.09]]
    score = [[float(i) for i in range(17)] + [99.0, 99.0, 99.0]]
    frame = _frame(["2022-03-01"], names, simple, score=score)
    dec = decile_returns(frame, "short", cost_bps=0.0)["deciles"].set_index("decile")
    assert dec.loc[10, "trades"] == pytest.approx(2.0)
    assert dec.loc[10, "mean_return"] == pytest.approx(0.06)
    # decile 9 = name 16 (weight 1) + a third of each tied name
    assert dec.loc[9, "mean_return"] == pytest.approx((0.016 + (0.03 + 0.06 + 0.09) / 3) / 2)
    assert dec["trades"].sum() == pytest.approx(20.0)
    ls = decile_returns(frame, "short", cost_bps=0.0)["long_short"]
    assert ls["ls_gross_mean"] == pytest.approx(0.06 - 0.0005)
    turn = top_decile_turnover(frame, "short")
    assert turn["top_names"] == pytest.approx(2.0) and turn["rebalances"] == 0


def _turnover_frame(top_scores: dict[int, list[float]]) -> pd.DataFrame:
    """11 sessions x 20 names; sessions not in ``top_scores`` get random scores."""
    rng = np.random.default_rng(3)
    names = [f"S{i:02d}" for i in range(20)]
    dates = pd.bdate_range("2023-01-02", periods=11)
    score = [top_scores.get(d, list(rng.permutation(20).astype(float))) for d in range(11)]
    simple = [[0.0] * 20 for _ in range(11)]
    return _frame(dates, names, simple, score=score)


def test_turnover_constant_ranking_is_zero():
    frame = _turnover_frame({d: [float(i) for i in range(20)] for d in range(11)})
    turn = top_decile_turnover(frame, "short")
    assert turn["rebalances"] == 2  # sampled sessions 0, 5, 10
    assert turn["turnover"] == 0.0
    assert turn["top_names"] == pytest.approx(2.0)


def test_turnover_of_a_reshuffled_ranking_by_hand():
    ascending = [float(i) for i in range(20)]              # top: S18, S19
    descending = [float(19 - i) for i in range(20)]        # top: S00, S01 -> all new: 1.0
    mixed = [float(i) for i in range(20)]
    mixed[1], mixed[7], mixed[19], mixed[18] = 50.0, 40.0, 1.0, 7.0  # top: S01, S07 -> 1/2 new
    frame = _turnover_frame({0: ascending, 5: descending, 10: mixed})
    turn = top_decile_turnover(frame, "short")
    assert turn["rebalances"] == 2
    assert turn["turnover"] == pytest.approx((1.0 + 0.5) / 2)
    assert turn["turnover_median"] == pytest.approx(0.75)
    # every session (h = 1): the random sessions in between count now, so it differs
    assert top_decile_turnover(frame, "short", h=1)["rebalances"] == 10


def _linear_case(seed: int = 1):
    rng = np.random.default_rng(seed)
    n_dates, n_names = 60, 50
    n = n_dates * n_names
    dates = np.repeat(pd.bdate_range("2019-01-02", periods=n_dates), n_names)
    X = pd.DataFrame({"signal": rng.normal(size=n), "noise": rng.normal(size=n),
                      # the same value for every name of a session: no cross-sectional content
                      "market": np.repeat(rng.normal(size=n_dates), n_names)})
    y = 0.02 * X["signal"].to_numpy() + 0.01 * X["market"].to_numpy() + rng.normal(0, 0.02, n)
    coef, *_ = np.linalg.lstsq(X.to_numpy(), y, rcond=None)  # fit in sample: a small noise coef

    def predict(frame: pd.DataFrame) -> np.ndarray:
        return frame[["signal", "noise", "market"]].to_numpy() @ coef

    return predict, X, y, dates, coef


def test_permutation_importance_ranks_the_informative_column_first():
    predict, X, y, dates, coef = _linear_case()
    assert abs(coef[1]) > 0 and abs(coef[2]) > 0  # the model uses every column
    imp = permutation_importance(predict, X, y, dates, n_repeats=3, seed=0)
    assert imp["feature"].iloc[0] == "signal"
    by = imp.set_index("feature")
    assert by.loc["signal", "ic_base"] > 0.5
    assert by.loc["signal", "importance_mean"] > 0.4
    assert abs(by.loc["noise", "importance_mean"]) < 0.02
    # shuffled within each session, a session-level column changes no ranking: exactly 0
    assert by.loc["market", "importance_mean"] == 0.0
    assert by.loc["market", "importance_std"] == 0.0
    assert (imp["repeats"] == 3).all()
    # deterministic, and a feature's figure does not depend on the other features listed
    again = permutation_importance(predict, X, y, dates, n_repeats=3, seed=0)
    pd.testing.assert_frame_equal(imp, again)
    alone = permutation_importance(predict, X, y, dates, n_repeats=3, seed=0, features=["noise"])
    assert alone["importance_mean"].iloc[0] == by.loc["noise", "importance_mean"]
    other = permutation_importance(predict, X, y, dates, n_repeats=3, seed=1, features=["noise"])
    assert other["importance_mean"].iloc[0] != by.loc["noise", "importance_mean"]


def test_permutation_keeps_every_session_multiset():
    """The shuffled column holds, per session, exactly the session's original values."""
    seen = []
    X = pd.DataFrame({"a": np.arange(30.0), "b": np.zeros(30)})
    dates = np.repeat(np.array(["2020-01-03", "2020-01-02", "2020-01-06"]), 10)
    y = np.arange(30.0)

    def predict(frame: pd.DataFrame) -> np.ndarray:
        seen.append(frame["a"].to_numpy().copy())
        return frame["a"].to_numpy()

    permutation_importance(predict, X, y, dates, n_repeats=2, features=["a"])
    assert len(seen) == 3 and np.array_equal(seen[0], np.arange(30.0))
    for shuffled in seen[1:]:
        assert not np.array_equal(shuffled, seen[0])
        for k in range(3):
            block = slice(10 * k, 10 * (k + 1))
            assert sorted(shuffled[block]) == sorted(seen[0][block])
    assert X["a"].tolist() == list(np.arange(30.0))  # the caller's frame is untouched
    with pytest.raises(KeyError):
        permutation_importance(predict, X, y, dates, features=["missing"])


def test_signal_summary_and_tables(perfect):
    s = signal_summary(perfect, "short", 0, cost_bps=5.0, h=1)
    assert s["horizon"] == "short" and s["h"] == 1 and s["nw_lag"] == 0
    assert s["sessions"] == 3 and s["ic_mean"] == pytest.approx(1.0)
    assert s["ls_net_mean"] == pytest.approx(0.178)
    assert s["ls_sharpe"] == pytest.approx(0.178 / 0.09 * math.sqrt(252))
    assert s["top_decile_turnover"] == 0.0  # S9 tops every session
    assert s["top10_mean_return"] == pytest.approx(0.10)
    assert s["bottom10_mean_return"] == pytest.approx(-0.08)
    tables = signal_tables(perfect, "short")
    assert list(tables) == ["IC by year (short)", "Decile returns (short)",
                            "Long-short and turnover (short)"]
    assert len(tables["Long-short and turnover (short)"]) == 1


def test_empty_input_gives_empty_results(perfect):
    none = perfect.iloc[:0]
    assert ic_by_year(none, "short").empty
    assert decile_returns(none, "short")["deciles"].empty
    assert math.isnan(top_decile_turnover(none, "short")["turnover"])
    assert signal_summary(none, "short")["sessions"] == 0
    with pytest.raises(KeyError):
        ic_by_year(perfect, "long")  # unknown horizon without h=


def test_html_fragment_escapes_and_formats(perfect, tmp_path):
    figures = write_signal_figures(perfect, "short", tmp_path / "a")
    assert set(figures) == {"IC by year (short)", "Decile returns (short)"}
    again = write_signal_figures(perfect, "short", tmp_path / "b")
    for key, path in figures.items():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.read_bytes() == again[key].read_bytes(), "PNG bytes must be reproducible"
    tables = {"<b>deciles</b>": pd.DataFrame({"decile": [1, 2], "mean_return": [0.123456, -0.01],
                                              "note": ["<script>x</script>", "a & b"],
                                              "ic_mean": [0.0123456, np.nan]})}
    out = signal_report_html(tables, {**figures, "missing": tmp_path / "none.png"})
    assert out.startswith('<section class="signal-report">') and "<html" not in out
    assert "&lt;b&gt;deciles&lt;/b&gt;" in out
    assert "&lt;script&gt;x&lt;/script&gt;" in out and "<script>" not in out
    assert "a &amp; b" in out
    assert "12.35%" in out and "-1.00%" in out and "0.0123" in out
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', out)
    assert len(images) == 2
    assert base64.b64decode(images[0]) == figures["IC by year (short)"].read_bytes()
    assert out == signal_report_html(tables, figures)
    report = signal_report_html(signal_tables(perfect, "short"), {})
    assert "<td>3.0</td>" in report  # trades per decile: a count with 1 decimal
    assert "10.00%" in report        # decile 10's mean return
