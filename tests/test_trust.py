"""Thompson-sampled trust in the fusion's sources (tasks/plan/trust.py): the conjugate update
by hand, the attribution of an episode's R, the weights a seeded stream of episodes leads to,
and the nightly step's policy versions, idempotency and reproducibility."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from tasks.data.calendar import sessions
from tasks.execution.episodes import EPISODE_COLUMNS
from tasks.paths import Paths
from tasks.plan import trust as tr
from tasks.policy import current_policy, default_policy, history, policy_dir, policy_version
from tasks.settings import AppSettings, load_settings
from tasks.statefiles import StateFileError

CONF = {"short": 0.4, "mid": 0.3, "rl": 0.3}   # policy.blend_weights in config/app.yaml
DRIFT = 0.30                                    # escalation.bounds.blend_weight_max_drift
SESSIONS = [d.date().isoformat() for d in sessions("XNYS", "2021-02-01", "2021-06-30")]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A bare home and the code's default settings (those of config/app.yaml for every key
    trust reads: checked by the last test)."""
    monkeypatch.setenv("HCP_HOME", str(tmp_path))
    settings = AppSettings()
    assert dict(settings.policy.blend_weights) == CONF
    assert settings.escalation.bounds.blend_weight_max_drift == DRIFT
    return Paths(tmp_path), settings


def with_trust(settings, **changes):
    return settings.model_copy(update={"trust": settings.trust.model_copy(update=changes)})


def write_views(paths: Paths, plan: str, views: dict[str, tuple[float, float, float]]) -> None:
    """The plan's signals as the daily run writes them (the columns trust reads)."""
    frame = pd.DataFrame({"symbol": list(views),
                          "edge_short": [v[0] for v in views.values()],
                          "edge_mid": [v[1] for v in views.values()],
                          "rl_size_hint": [v[2] for v in views.values()]})
    path = paths.data / "daily" / plan / "signals_with_gates.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)


def episode(eid: str, symbol: str, entry: str, exit_: str, r: float, side: str = "long",
            ts: str = "15:00:00") -> dict:
    row = dict.fromkeys(EPISODE_COLUMNS)
    row.update(episode_id=eid, symbol=symbol, side=side, entry_session=entry,
               exit_session=exit_, exit_date=exit_, exit_ts=f"{exit_}T{ts}Z", r_multiple=r)
    return row


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=EPISODE_COLUMNS)


def snapshot(paths: Paths) -> dict[str, bytes]:
    files = [tr.trust_path(paths), *sorted(policy_dir(paths).glob("*"))]
    return {str(p): p.read_bytes() for p in files if p.is_file()}


# --------------------------------------------------------------------------- (a) the update

def test_the_posterior_update_equals_the_closed_form_by_hand():
    prior = tr.NIG(mu=0.0, kappa=1.0, alpha=2.0, beta=1.0)
    # x = 1:    kappa 2, mu 1/2,                alpha 5/2, beta 1 + 1*(1-0)^2/(2*2)      = 5/4
    # x = -1/2: kappa 3, mu (2*1/2 - 1/2)/3 = 1/6, alpha 3, beta 5/4 + 2*(-1/2-1/2)^2/(2*3) = 19/12
    # x = 2:    kappa 4, mu (3*1/6 + 2)/4 = 5/8,  alpha 7/2, beta 19/12 + 3*(2-1/6)^2/(2*4) = 91/32
    expected = [(0.5, 2.0, 2.5, 1.25), (1 / 6, 3.0, 3.0, 19 / 12), (0.625, 4.0, 3.5, 91 / 32)]
    post = prior
    for x, (mu, kappa, alpha, beta) in zip([1.0, -0.5, 2.0], expected, strict=True):
        post = post.update(x)
        assert (post.mu, post.kappa, post.alpha, post.beta) == pytest.approx(
            (mu, kappa, alpha, beta), abs=1e-12)
    assert post.n == 3
    # the batch form gives the same numbers: xbar 5/6, sum of squares 19/6
    xbar, ss, n = 5 / 6, 19 / 6, 3
    assert post.beta == pytest.approx(1.0 + ss / 2 + 1.0 * n * xbar ** 2 / (2 * (1.0 + n)))
    assert post.mu == pytest.approx(n * xbar / (1.0 + n))


def test_an_episode_credits_each_source_by_the_sign_of_its_view():
    # long, R = +1: short favoured it (edge 0.8) -> +1, mid opposed it (0.3) -> -1, no RL hint
    assert tr.credit(1.0, "long", tr.source_views(0.8, 0.3, math.nan)) == {"short": 1.0,
                                                                          "mid": -1.0}
    # short, R = -0.5: short favoured the short (0.2) -> -0.5; mid (0.7) and a positive RL
    # hint opposed it -> +0.5 each
    assert tr.credit(-0.5, "short", tr.source_views(0.2, 0.7, 1.5)) == {
        "short": -0.5, "mid": 0.5, "rl": 0.5}
    # an edge of exactly 0.5 is no view; an unknown R credits nobody
    assert tr.credit(2.0, "long", tr.source_views(0.5, math.nan, math.nan)) == {}
    assert tr.credit(math.nan, "long", tr.source_views(0.9, 0.9, 1.0)) == {}


def test_the_nightly_step_updates_the_posteriors_by_the_closed_form(home):
    paths, settings = home
    plan, entry, day = SESSIONS[0], SESSIONS[1], SESSIONS[2]
    write_views(paths, plan, {"S1": (0.8, 0.3, math.nan), "S2": (0.9, 0.6, math.nan),
                              "S3": (0.7, math.nan, math.nan)})
    eps = frame([episode("e1", "S1", entry, day, 1.0, ts="14:00:00"),
                 episode("e2", "S2", entry, day, -0.5, ts="15:00:00"),
                 episode("e3", "S3", entry, day, 2.0, ts="15:30:00"),
                 episode("e4", "S9", entry, day, 1.0, ts="15:45:00")])   # not in the plan
    night = tr.nightly_update(paths, settings, day, eps)
    post = tr.read_state(paths).posteriors
    # short got +1, -0.5, +2 (the hand-computed stream above)
    assert (post["short"].mu, post["short"].kappa, post["short"].alpha,
            post["short"].beta) == pytest.approx((0.625, 4.0, 3.5, 91 / 32), abs=1e-12)
    # mid got -1 then -0.5: kappa 2, mu -1/2, beta 1 + 1/4; then kappa 3, mu -1/2, beta 5/4 + 0
    assert (post["mid"].mu, post["mid"].kappa, post["mid"].alpha,
            post["mid"].beta) == pytest.approx((-0.5, 3.0, 3.0, 1.25), abs=1e-12)
    assert post["rl"].n == 0 and post["rl"].kappa == 1.0   # no RL hint: never updated
    assert night["episodes_counted"] == 4 and night["credited"] == {"short": 3, "mid": 2,
                                                                     "rl": 0}
    notes = {e["episode_id"]: e["note"] for e in night["episodes"]}
    assert notes["e4"] == f"S9 not in the plan of {plan}" and notes["e1"] is None


# --------------------------------------------------------------------------- (b) the weights

def test_weights_keep_the_band_the_total_and_an_unproven_source_as_configured():
    ev = {"short": 50, "mid": 50, "rl": 0}
    same = tr.trust_weights(CONF, {"short": 0.2, "mid": 0.2, "rl": 5.0}, ev, shrink=10,
                            temperature=0.5, drift=DRIFT)
    assert same == pytest.approx(CONF)          # equal draws: the configured mix
    wild = tr.trust_weights(CONF, {"short": -9.0, "mid": 9.0, "rl": 0.0}, ev, shrink=10,
                            temperature=0.5, drift=DRIFT)
    assert wild["rl"] == 0.3                    # no evidence: configured, whatever its draw
    # the evidence would leave short 0.067 and mid 0.633 (weight of evidence 50/60): both are
    # held at the band, short at 0.4 - 0.3 and mid at 0.3 + 0.3, still summing to 0.7
    assert wild["short"] == pytest.approx(0.4 - DRIFT) and wild["mid"] == pytest.approx(0.6)
    assert sum(wild.values()) == pytest.approx(1.0)
    none = tr.trust_weights(CONF, {"short": 3.0, "mid": -3.0, "rl": 0.0},
                            {"short": 0, "mid": 0, "rl": 0}, shrink=10, temperature=0.5,
                            drift=DRIFT)
    assert none == CONF                         # nothing counted: nothing moves


def test_a_stream_where_one_source_helps_and_one_hurts_moves_the_blend(home):
    """Source A (mid) is right about the trade's direction often enough for a signed R of
    +0.3 on average, source B (short) wrong enough for -0.2: B ends below A and below its
    configured 0.4, every night inside the drift band, summing to the configured total."""
    paths, settings = home
    rng = np.random.default_rng(20240601)
    mean_abs = math.sqrt(2 / math.pi)                     # E|N(0, 1)|
    right = {"mid": (1 + 0.3 / mean_abs) / 2, "short": (1 - 0.2 / mean_abs) / 2}
    rows, signed = [], {"short": [], "mid": []}
    nights = SESSIONS[2:42]
    for k, day in enumerate(nights, start=2):
        plan, entry = SESSIONS[k - 2], SESSIONS[k - 1]
        views = {}
        for j in range(5):
            r = abs(rng.normal()) * (1 if rng.random() < 0.5 else -1)
            sym = f"S{j}"
            edges = {}
            for src in ("short", "mid"):
                agrees = rng.random() < right[src]
                edges[src] = 0.5 + (0.2 if (r > 0) == agrees else -0.2)
                signed[src].append(r * (1 if edges[src] > 0.5 else -1))
            views[sym] = (edges["short"], edges["mid"], math.nan)
            rows.append(episode(f"{day}-{sym}", sym, entry, day, r, ts=f"15:{j:02d}:00"))
        write_views(paths, plan, views)
    eps = frame(rows)   # every night sees the whole frame: episodes after it must be ignored
    assert np.mean(signed["mid"]) > 0.15 and np.mean(signed["short"]) < -0.1
    configured_total = sum(CONF.values())
    for day in nights:
        night = tr.nightly_update(paths, settings, day, eps)
        assert night["episodes_counted"] == 5, day
        w = night["weights_after"]
        assert sum(w.values()) == pytest.approx(configured_total, abs=1e-9), day
        assert all(CONF[k] - DRIFT - 1e-9 <= w[k] <= CONF[k] + DRIFT + 1e-9 for k in w), day
        assert w["rl"] == CONF["rl"], day
        assert current_policy(paths, settings)[0].blend_weights == w, day
    final = current_policy(paths, settings)[0].blend_weights
    assert final["short"] < final["mid"] and final["short"] < CONF["short"]
    state = tr.read_state(paths)
    assert state.posteriors["mid"].mu > 0 > state.posteriors["short"].mu
    assert state.posteriors["short"].n == state.posteriors["mid"].n == 200
    assert len(state.counted) == 200


# --------------------------------------------------------------------------- (c) idempotency

def test_a_rerun_of_the_same_night_changes_nothing(home):
    paths, settings = home
    write_views(paths, SESSIONS[0], {"A": (0.9, 0.1, math.nan), "B": (0.8, 0.2, math.nan)})
    eps = frame([episode(f"e{i}", "A" if i % 2 else "B", SESSIONS[1], SESSIONS[2],
                         1.5 if i % 3 else -0.4, ts=f"15:{i:02d}:00") for i in range(12)])
    first = tr.nightly_update(paths, settings, SESSIONS[2], eps)
    assert first["version"] != "unchanged"
    before = snapshot(paths)
    again = tr.nightly_update(paths, settings, SESSIONS[2], eps)
    assert again == first and snapshot(paths) == before
    # the next night counts none of them again: its posteriors are the same, nothing drawn
    nxt = tr.nightly_update(paths, settings, SESSIONS[3], eps)
    assert nxt["episodes_counted"] == 0 and nxt["version"] == "unchanged"
    assert nxt["posteriors"] == first["posteriors"]
    assert tr.read_state(paths).posteriors["short"].n == 12
    # an episode of that night that arrives late is counted by a re-run, once
    late = pd.concat([eps, frame([episode("late", "A", SESSIONS[1], SESSIONS[2], 2.0,
                                          ts="15:59:00")])], ignore_index=True)
    tr.nightly_update(paths, settings, SESSIONS[2], late)
    assert tr.read_state(paths).posteriors["short"].n == 13
    settled = snapshot(paths)
    tr.nightly_update(paths, settings, SESSIONS[2], late)
    assert snapshot(paths) == settled


# --------------------------------------------------------------------------- (d) versions

def test_a_move_writes_a_version_with_its_diff_and_no_move_writes_none(home):
    paths, settings = home
    v0 = policy_version(default_policy(settings))
    write_views(paths, SESSIONS[0], {"A": (0.9, 0.1, math.nan)})
    eps = frame([episode(f"e{i}", "A", SESSIONS[1], SESSIONS[2], 1.0, ts=f"15:{i:02d}:00")
                 for i in range(30)])
    # a min_change no move can reach: evidence is counted, the policy is left alone
    strict = with_trust(settings, min_change=1.0)
    held = tr.nightly_update(paths, strict, SESSIONS[2], eps)
    assert held["version"] == "unchanged" and "< trust.min_change 1" in held["why"]
    assert held["max_change"] > 0.01 and held["weights_after"] == held["weights_before"]
    assert not list(policy_dir(paths).glob("pol-*.json")) and history(paths) == []
    assert current_policy(paths, settings)[1] == v0
    # the same evidence with the default min_change in another home: a new version, effective
    # from the night's own plan, with its diff and the posterior summary in the reason
    other = Paths(paths.home / "other")
    write_views(other, SESSIONS[0], {"A": (0.9, 0.1, math.nan)})
    moved = tr.nightly_update(other, settings, SESSIONS[2], eps)
    v1 = moved["version"]
    assert v1 != "unchanged" and moved["policy_before"] == v0
    assert moved["weights_after"]["short"] > CONF["short"] > 0
    assert moved["weights_after"]["mid"] < CONF["mid"]
    assert current_policy(other, settings)[1] == v1
    entry = history(other)[-1]
    assert entry["version"] == v1 and entry["parent"] == v0 and entry["effective"] == SESSIONS[2]
    assert entry["reason"].startswith(f"trust: Thompson update of {SESSIONS[2]} (short mu +")
    assert "n 30" in entry["reason"] and "rl no evidence" in entry["reason"]
    assert moved["diff"].startswith(f"--- {v0}\n+++ {v1}\n")
    assert '-    "short": 0.4' in moved["diff"] and '+    "short": ' in moved["diff"]
    assert moved["line"].endswith(f"new policy {v1} from the plan of {SESSIONS[2]}")
    # a night without new evidence writes nothing
    files = snapshot(other)
    quiet = tr.nightly_update(other, settings, SESSIONS[3], eps)
    assert quiet["version"] == "unchanged" and quiet["why"].startswith("no new evidence")
    assert {k: v for k, v in snapshot(other).items() if "policy" in k} == {
        k: v for k, v in files.items() if "policy" in k}
    assert len(history(other)) == 1


# --------------------------------------------------------------------------- (e) the seed

def test_the_same_seed_and_session_draw_the_same_weights(home, tmp_path):
    paths, settings = home
    post = {"short": tr.NIG(0.1, 21.0, 12.0, 9.0, 20), "mid": tr.NIG(-0.1, 21.0, 12.0, 11.0, 20),
            "rl": tr.NIG(0.0, 1.0, 2.0, 1.0, 0)}

    def weights(seed: int, day: str) -> tuple[dict, dict]:
        draws = tr.thompson_draws(post, tr.session_rng(seed, day))
        w = tr.trust_weights(CONF, {k: d["mean"] for k, d in draws.items()},
                             {k: p.n for k, p in post.items()}, shrink=10, temperature=0.5,
                             drift=DRIFT)
        return draws, w

    assert weights(3, "2021-03-01") == weights(3, "2021-03-01")
    assert weights(3, "2021-03-01")[0] != weights(3, "2021-03-02")[0]
    assert weights(3, "2021-03-01")[0] != weights(4, "2021-03-01")[0]
    # end to end: two homes with the same evidence write the same state and the same version
    homes = [Paths(tmp_path / "one"), Paths(tmp_path / "two")]
    eps = frame([episode(f"e{i}", "A", SESSIONS[1], SESSIONS[2], 0.5 * (-1) ** i + 0.3,
                         ts=f"15:{i:02d}:00") for i in range(20)])
    nights = []
    for h in homes:
        write_views(h, SESSIONS[0], {"A": (0.8, 0.3, math.nan)})
        nights.append(tr.nightly_update(h, settings, SESSIONS[2], eps))
    assert nights[0] == nights[1]
    assert tr.trust_path(homes[0]).read_bytes() == tr.trust_path(homes[1]).read_bytes()


# --------------------------------------------------------------------------- the state file

def test_a_damaged_state_is_refused_naming_it_and_repaired_by_moving_it_aside(home):
    import tasks.statespecs  # noqa: F401  (fills the table)
    from tasks.statefiles import RepairRequest, probe_states, run_repair

    paths, settings = home
    write_views(paths, SESSIONS[0], {"A": (0.9, 0.1, math.nan)})
    eps = frame([episode("e1", "A", SESSIONS[1], SESSIONS[2], 1.0)])
    tr.nightly_update(paths, settings, SESSIONS[2], eps)
    path = tr.trust_path(paths)
    data = json.loads(path.read_text())
    data["posteriors"]["short"]["n"] = 7          # no longer its prior updated n times
    path.write_text(json.dumps(data))
    with pytest.raises(StateFileError) as err:
        tr.nightly_update(paths, settings, SESSIONS[3], eps)
    assert str(err.value).startswith(f"{path}: wrong shape") and "hcp state repair trust" in str(
        err.value)
    [fs] = probe_states(paths, settings, ["trust"])
    assert fs.state == "damaged"
    run_repair(paths, settings, "trust",
               RepairRequest(by="ops", reason="edited", at="2021-02-05T00:00:00Z"))
    assert not path.exists() and any((path.parent / "damaged").glob("trust.json.*"))
    # the next night counts the evidence again from the prior
    again = tr.nightly_update(paths, settings, SESSIONS[3], eps)
    assert again["episodes_counted"] == 1 and tr.read_state(paths).posteriors["short"].n == 1


def test_disabled_trust_touches_nothing_and_the_summary_says_what_trust_did(home):
    from flows.nightly import write_summary

    paths, settings = home
    write_views(paths, SESSIONS[0], {"A": (0.9, 0.1, math.nan)})
    eps = frame([episode("e1", "A", SESSIONS[1], SESSIONS[2], 1.0)])
    off = tr.nightly_update(paths, with_trust(settings, enabled=False), SESSIONS[2], eps)
    assert off["action"] == "disabled" and not tr.trust_path(paths).exists()
    night = tr.nightly_update(paths, settings, SESSIONS[2], eps)
    out = write_summary(paths, pd.Timestamp(SESSIONS[2]), pd.DataFrame(), settings, night)
    summary = json.loads(out.read_text())
    assert summary["trust"]["posteriors"]["short"]["n"] == 1
    assert set(summary["trust"]) >= {"sampled", "weights_before", "weights_after", "version",
                                     "posteriors", "line"}


def test_the_shipped_config_holds_the_trust_section_and_the_defaults_trust_reads():
    from tasks.config.trust import TrustSettings

    shipped = load_settings()
    assert shipped.trust == TrustSettings()
    assert dict(shipped.policy.blend_weights) == CONF
    assert shipped.escalation.bounds.blend_weight_max_drift == DRIFT
