"""Boundary tests of the hard risk clamps (tasks/risk/clamps.py) and of the hard-limit settings.

Every case is hand-computed with net liquidity 100_000 and a price of 10.0, so a quantity q is
worth 10*q in cash and each limit sits on a whole number of shares:

    per-name core 1.5% = 1_500 (150 sh), penny 0.4% = 400 (40 sh), F&O 0.7% = 700 (70 sh at
    delta 1, 140 sh at delta 0.5); bucket penny 2% = 2_000; sector 40% = 40_000;
    top-5 50% = 50_000; single ticker 25% = 25_000.

Each limit is tested just below, at and just above its boundary (LEAN risk-model style).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from pydantic import ValidationError

from tasks.risk.clamps import (
    Book,
    ClampResult,
    Order,
    Position,
    _limits,
    blocked_reason,
    book_from_frame,
    clamp_batch,
    clamp_order,
    classify_bucket,
    exposures,
    sip_transfer,
    stop_levels,
    trail_stop,
)
from tasks.settings import ConfigError, load_settings
from tasks.trading_settings import BucketRules, GuardrailSettings, RiskSettings

NL = 100_000.0
PX = 10.0
RISK = RiskSettings()
GUARD = GuardrailSettings(lot_size=1, max_positions=8)


def buy(symbol: str = "NEW", qty: int = 100, bucket: str = "core", sector: str = "tech",
        delta: float = 1.0, price: float = PX) -> Order:
    return Order(symbol, "BUY", qty, price, bucket, sector, delta)


def pos(symbol: str, qty: int, bucket: str = "core", sector: str = "tech", lots: int = 1,
        delta: float = 1.0, price: float = PX) -> Position:
    return Position(symbol, qty, price, bucket, sector, delta, lots)


def book_of(*positions: Position, nl: float = NL) -> Book:
    return Book(nl, {p.symbol: p for p in positions})


def clamp(order: Order, book: Book | None = None, risk: RiskSettings = RISK,
          guard: GuardrailSettings = GUARD, dnt=()) -> ClampResult:
    return clamp_order(order, book if book is not None else Book(NL), risk, guard, dnt)


# --------------------------------------------------------------------------- settings: hard limits


@pytest.mark.parametrize("kwargs", [
    {"per_name": {"core": 0.0151}},
    {"per_name": {"penny": 0.0041}},
    {"per_name": {"fno": 0.0071}},
    {"bucket_caps": {"core": 0.91}},
    {"bucket_caps": {"penny": 0.03}},
    {"bucket_caps": {"fno": 0.051}},
    {"top5_max": 0.51},
    {"single_ticker_max": 0.2501},
    {"single_sector_max": 0.4001},
    {"initial_stop_atr": 1.9},
    {"trailing_stop_atr": 1.3},
    {"take_profit_atr": 2.6},
])
def test_risk_settings_refuse_looser_than_hard_limits(kwargs):
    with pytest.raises(ValidationError, match="hard limits may only be tightened"):
        RiskSettings(**kwargs)


@pytest.mark.parametrize("kwargs", [
    {"per_name": {"core": 0.015}},          # exactly at the ceiling
    {"per_name": {"core": 0.01}},
    {"per_name": {"penny": 0.004, "fno": 0.007}},
    {"bucket_caps": {"core": 0.90, "penny": 0.02, "fno": 0.05}},
    {"bucket_caps": {"penny": 0.01}},
    {"top5_max": 0.50},
    {"top5_max": 0.30},
    {"single_ticker_max": 0.25},
    {"single_sector_max": 0.40},
    {"initial_stop_atr": 1.8},
    {"trailing_stop_atr": 1.2},
    {"take_profit_atr": 2.5},
    {"initial_stop_atr": 1.0, "trailing_stop_atr": 0.5, "take_profit_atr": 2.0},
])
def test_risk_settings_accept_at_or_tighter_than_hard_limits(kwargs):
    s = RiskSettings(**kwargs)
    for key, val in kwargs.items():
        assert getattr(s, key) == val


def test_risk_settings_defaults_are_the_hard_limits():
    s = RiskSettings()
    assert s.name_cap("core") == 0.015 and s.name_cap("penny") == 0.004
    assert s.name_cap("fno") == 0.007
    assert s.cap("core") == 0.90 and s.cap("penny") == 0.02 and s.cap("fno") == 0.05
    assert (s.top5_max, s.single_ticker_max, s.single_sector_max) == (0.50, 0.25, 0.40)
    assert (s.initial_stop_atr, s.trailing_stop_atr, s.take_profit_atr) == (1.8, 1.2, 2.5)
    assert s.allow_short is False


def test_partial_per_name_dict_falls_back_to_hard_values_for_missing_buckets():
    s = RiskSettings(per_name={"core": 0.01}, bucket_caps={"penny": 0.01})
    assert s.name_cap("core") == 0.01
    assert s.name_cap("penny") == 0.004 and s.name_cap("fno") == 0.007
    assert s.cap("penny") == 0.01
    assert s.cap("core") == 0.90 and s.cap("fno") == 0.05


def test_risk_settings_error_names_every_offending_key():
    with pytest.raises(ValidationError) as err:
        RiskSettings(per_name={"core": 0.02}, top5_max=0.6)
    msg = str(err.value)
    assert "risk.per_name.core=0.02 > 0.015" in msg
    assert "risk.top5_max=0.6 > 0.5" in msg


@pytest.mark.parametrize("risk, key", [
    ({"per_name": {"core": 0.0151}}, "risk.per_name.core"),
    ({"bucket_caps": {"penny": 0.03}}, "risk.bucket_caps.penny"),
    ({"top5_max": 0.51}, "risk.top5_max"),
    ({"single_sector_max": 0.41}, "risk.single_sector_max"),
    ({"initial_stop_atr": 1.9}, "risk.initial_stop_atr"),
    ({"trailing_stop_atr": 1.3}, "risk.trailing_stop_atr"),
])
def test_load_settings_raises_config_error_naming_the_key(risk, key, monkeypatch):
    for var in ("HCP_CONFIG", "HCP_HOME"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(risk=risk)


def test_load_settings_accepts_a_tightened_limit(monkeypatch):
    for var in ("HCP_CONFIG", "HCP_HOME"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings(risk={"per_name": {"core": 0.01}})
    assert s.risk.name_cap("core") == 0.01


# --------------------------------------------------------------------------- per-name caps


@pytest.mark.parametrize("qty, expect_qty, expect_tags", [
    (149, 149, ()),                        # 1_490: below the cap
    (150, 150, ()),                        # 1_500: exactly the cap
    (151, 150, ("clamp:per_name",)),       # 1_510: cut to 1_500
    (1_000, 150, ("clamp:per_name",)),
])
def test_per_name_core_cap(qty, expect_qty, expect_tags):
    res = clamp(buy(qty=qty))
    assert res.order.qty == expect_qty
    assert res.tags == expect_tags
    assert not res.dropped


def test_unclamped_order_is_returned_unchanged():
    order = buy(qty=150)
    res = clamp(order)
    assert res.order == order
    assert res.tags == ()


@pytest.mark.parametrize("qty, expect_qty, expect_tags", [
    (39, 39, ()),                          # 390
    (40, 40, ()),                          # 400 = 0.4%
    (41, 40, ("clamp:per_name",)),         # 410 -> 400
])
def test_per_name_penny_cap(qty, expect_qty, expect_tags):
    res = clamp(buy(qty=qty, bucket="penny"))
    assert (res.order.qty, res.tags) == (expect_qty, expect_tags)


@pytest.mark.parametrize("qty, expect_qty, expect_tags", [
    (69, 69, ()),
    (70, 70, ()),                          # 700 = 0.7%
    (71, 70, ("clamp:per_name",)),
])
def test_per_name_fno_cap_delta_one(qty, expect_qty, expect_tags):
    res = clamp(buy(qty=qty, bucket="fno"))
    assert (res.order.qty, res.tags) == (expect_qty, expect_tags)


@pytest.mark.parametrize("qty, expect_qty, expect_tags", [
    (139, 139, ()),
    (140, 140, ()),                        # 140 * 10 * 0.5 = 700 delta-equivalent
    (141, 140, ("clamp:per_name",)),
    (300, 140, ("clamp:per_name",)),
])
def test_per_name_fno_cap_uses_delta(qty, expect_qty, expect_tags):
    res = clamp(buy(qty=qty, bucket="fno", delta=0.5))
    assert (res.order.qty, res.tags) == (expect_qty, expect_tags)


def test_negative_delta_counts_as_gross_exposure():
    res = clamp(buy(qty=200, bucket="fno", delta=-0.5))
    assert res.order.qty == 140
    assert res.tags == ("clamp:per_name",)


def test_tightened_per_name_cap_is_used():
    risk = RiskSettings(per_name={"core": 0.01})       # 1_000 = 100 shares
    assert clamp(buy(qty=100), risk=risk).tags == ()
    res = clamp(buy(qty=101), risk=risk)
    assert (res.order.qty, res.tags) == (100, ("clamp:per_name",))


@pytest.mark.parametrize("qty, expect_qty, expect_tags", [
    (49, 49, ()),
    (50, 50, ()),                          # 1_000 held + 500 = 1_500
    (51, 50, ("clamp:per_name",)),
    (500, 50, ("clamp:per_name",)),
])
def test_held_position_counts_toward_per_name_cap(qty, expect_qty, expect_tags):
    book = book_of(pos("NEW", 100))                    # 1_000 held
    res = clamp(buy(qty=qty), book)
    assert (res.order.qty, res.tags) == (expect_qty, expect_tags)


def test_held_position_at_per_name_cap_drops_an_add():
    book = book_of(pos("NEW", 150))                    # 1_500 held: no room
    res = clamp(buy(qty=1), book)
    assert res.dropped
    assert res.order.qty == 0
    assert res.tags == ("clamp:per_name",)


def test_held_position_uses_its_own_mark_price():
    # 50 shares held at a mark of 20 = 1_000; the order is priced at 10 -> room 500 = 50 shares
    book = book_of(pos("NEW", 50, price=20.0))
    res = clamp(buy(qty=80), book)
    assert (res.order.qty, res.tags) == (50, ("clamp:per_name",))


# --------------------------------------------------------------------------- bucket cap


def _penny_book(n: int, qty: int = 40) -> Book:
    return book_of(*(pos(f"P{i}", qty, bucket="penny", sector=f"s{i}") for i in range(n)))


def test_penny_bucket_full_drops_next_penny_order():
    book = _penny_book(5)                              # 5 x 400 = 2_000 = 2%
    res = clamp(buy(qty=40, bucket="penny", sector="other"), book)
    assert res.dropped
    assert res.tags == ("clamp:bucket",)


def test_penny_bucket_with_four_held_allows_a_full_name():
    book = _penny_book(4)                              # 1_600: room 400
    res = clamp(buy(qty=40, bucket="penny", sector="other"), book)
    assert (res.order.qty, res.tags) == (40, ())


def test_penny_bucket_with_four_held_cuts_only_at_per_name():
    book = _penny_book(4)
    res = clamp(buy(qty=50, bucket="penny", sector="other"), book)
    assert (res.order.qty, res.tags) == (40, ("clamp:per_name",))


@pytest.mark.parametrize("qty, expect_qty, expect_tags", [
    (19, 19, ()),
    (20, 20, ()),                                      # 1_800 + 200 = 2_000
    (21, 20, ("clamp:bucket",)),
    (40, 20, ("clamp:bucket",)),
])
def test_penny_bucket_room_boundary(qty, expect_qty, expect_tags):
    book = book_of(*(pos(f"P{i}", 40, bucket="penny", sector=f"s{i}") for i in range(4)),
                   pos("P4", 20, bucket="penny", sector="s4"))     # 1_800 held
    res = clamp(buy(qty=qty, bucket="penny", sector="other"), book)
    assert (res.order.qty, res.tags) == (expect_qty, expect_tags)


def test_bucket_cap_ignores_other_buckets():
    # 2_000 of core exposure does not use the penny bucket's room
    book = book_of(pos("C0", 200, bucket="core", sector="s9"))
    res = clamp(buy(qty=40, bucket="penny", sector="other"), book)
    assert (res.order.qty, res.tags) == (40, ())


@pytest.mark.parametrize("qty, expect_qty, expect_tags", [
    (49, 49, ()),
    (50, 50, ()),                                      # 4_500 + 500 = 5_000 = 5%
    (51, 50, ("clamp:bucket",)),
])
def test_fno_bucket_cap(qty, expect_qty, expect_tags):
    book = book_of(*(pos(f"F{i}", 90, bucket="fno", sector=f"s{i}", delta=0.5)
                     for i in range(10)))             # 10 x 450 = 4_500
    guard = GuardrailSettings(lot_size=1, max_positions=20)
    res = clamp(buy(qty=qty, bucket="fno", sector="other"), book, guard=guard)
    assert (res.order.qty, res.tags) == (expect_qty, expect_tags)


def test_core_bucket_cap_with_tightened_setting():
    risk = RiskSettings(bucket_caps={"core": 0.05})    # 5_000
    book = book_of(pos("C0", 480, sector="a"))         # 4_800: room 200
    res = clamp(buy(qty=150, sector="b"), book, risk=risk)
    assert (res.order.qty, res.tags) == (20, ("clamp:bucket",))


# --------------------------------------------------------------------------- concentration limits


def _sector_book() -> Book:
    # 4 tech names of 9_900 each = 39_600 tech (room 400); top-5 of others = 39_600
    return book_of(*(pos(f"T{i}", 990, sector="tech") for i in range(4)))


@pytest.mark.parametrize("qty, expect_qty, expect_tags", [
    (39, 39, ()),
    (40, 40, ()),                                      # 39_600 + 400 = 40_000
    (41, 40, ("clamp:sector",)),
    (150, 40, ("clamp:sector",)),
])
def test_sector_cap(qty, expect_qty, expect_tags):
    res = clamp(buy(qty=qty, sector="tech"), _sector_book())
    assert (res.order.qty, res.tags) == (expect_qty, expect_tags)


def test_sector_cap_does_not_bind_another_sector():
    res = clamp(buy(qty=150, sector="energy"), _sector_book())
    assert (res.order.qty, res.tags) == (150, ())


def test_full_sector_drops_order_in_that_sector():
    book = book_of(*(pos(f"T{i}", 1_000, sector="tech") for i in range(4)))   # 40_000
    res = clamp(buy(qty=10, sector="tech"), book)
    assert res.dropped and res.tags == ("clamp:sector",)


def _top5_book() -> Book:
    # 4 names of 12_400 in different sectors = 49_600 (room 400 under the 50% top-5 cap)
    return book_of(*(pos(f"X{i}", 1_240, sector=f"s{i}") for i in range(4)))


@pytest.mark.parametrize("qty, expect_qty, expect_tags", [
    (39, 39, ()),
    (40, 40, ()),                                      # 49_600 + 400 = 50_000
    (41, 40, ("clamp:top5",)),
    (150, 40, ("clamp:top5",)),
])
def test_top5_cap(qty, expect_qty, expect_tags):
    res = clamp(buy(qty=qty, sector="other"), _top5_book())
    assert (res.order.qty, res.tags) == (expect_qty, expect_tags)


def test_top5_only_counts_the_five_largest():
    # five names of 9_900 = 49_500; a new name of <= 1_500 is not among the five largest,
    # so the top-5 sum stays 49_500 and the order is not cut.
    book = book_of(*(pos(f"X{i}", 990, sector=f"s{i}") for i in range(5)))
    res = clamp(buy(qty=150, sector="other"), book)
    assert (res.order.qty, res.tags) == (150, ())


def test_several_binding_limits_each_leave_a_tag():
    # tech: 13_000 + 13_000 + 13_700 = 39_700 (sector room 300 -> 30 sh)
    # top-5 of others: 39_700 + 10_100 = 49_800 (top-5 room 200 -> 20 sh)
    book = book_of(pos("A", 1_300), pos("B", 1_300), pos("C", 1_370),
                   pos("D", 1_010, sector="fin"))
    res = clamp(buy(qty=200, sector="tech"), book)   # per-name: 2_000 -> 1_500
    assert res.order.qty == 20
    assert res.tags == ("clamp:per_name", "clamp:sector", "clamp:top5")


def test_binding_limits_that_do_not_cut_further_leave_no_tag():
    # same book; 25 shares is under per-name (250 <= 1_500) and sector (<= 300) but over top-5
    book = book_of(pos("A", 1_300), pos("B", 1_300), pos("C", 1_370),
                   pos("D", 1_010, sector="fin"))
    res = clamp(buy(qty=25, sector="tech"), book)
    assert (res.order.qty, res.tags) == (20, ("clamp:top5",))


def test_single_ticker_limit_boundary_via_limits():
    # per-name (<= 1.5%) is always tighter than the 25% single-ticker cap, so the latter can
    # only be observed on its own predicate: 24_000 held -> room 1_000 = 100 shares.
    book = book_of(pos("BIG", 2_400))
    ok = _limits(buy("BIG", qty=1), book, RISK)["single_ticker"]
    assert ok(99) and ok(100)
    assert not ok(101)


def test_single_ticker_at_cap_drops_add_with_per_name_tag_first():
    book = book_of(pos("BIG", 2_500))                  # 25_000 = single-ticker cap
    res = clamp(buy("BIG", qty=10), book)
    assert res.dropped
    assert res.tags == ("clamp:per_name",)           # per-name cut to 0 first


@pytest.mark.parametrize("name, room_qty", [
    ("per_name", 150), ("bucket", 9_000), ("sector", 4_000), ("top5", 5_000),
    ("single_ticker", 2_500),
])
def test_each_limit_predicate_boundary_on_empty_book(name, room_qty):
    ok = _limits(buy(qty=1), Book(NL), RISK)[name]
    assert ok(0) and ok(room_qty - 1) and ok(room_qty)
    assert not ok(room_qty + 1)


# --------------------------------------------------------------------------- blocks


def test_do_not_trade_from_settings_drops():
    risk = RiskSettings(do_not_trade=["NEW"])
    res = clamp(buy(qty=10), risk=risk)
    assert res.dropped and res.tags == ("clamp:do_not_trade",)


def test_do_not_trade_argument_drops():
    res = clamp(buy(qty=10), dnt=["NEW"])
    assert res.dropped and res.tags == ("clamp:do_not_trade",)
    assert clamp(buy("OTHER", qty=10), dnt=["NEW"]).tags == ()


def test_do_not_trade_does_not_block_an_exit():
    book = book_of(pos("NEW", 100))
    order = Order("NEW", "SELL", 100, PX, "core", "tech")
    res = clamp(order, book, risk=RiskSettings(do_not_trade=["NEW"]), dnt=["NEW"])
    assert res.order == order and res.tags == ()


def test_max_positions_blocks_a_new_symbol_only():
    guard = GuardrailSettings(lot_size=1, max_positions=2)
    book = book_of(pos("A", 10, sector="a"), pos("B", 10, sector="b"))
    res = clamp(buy("C", qty=10), book, guard=guard)
    assert res.dropped and res.tags == ("clamp:max_positions",)
    add = clamp(buy("A", qty=10, sector="a"), book, guard=guard)
    assert (add.order.qty, add.tags) == (10, ())


def test_max_positions_just_below_allows_a_new_symbol():
    guard = GuardrailSettings(lot_size=1, max_positions=2)
    book = book_of(pos("A", 10, sector="a"))
    res = clamp(buy("C", qty=10), book, guard=guard)
    assert (res.order.qty, res.tags) == (10, ())


@pytest.mark.parametrize("lots, blocked", [(1, False), (2, True), (3, True)])
def test_max_per_ticker(lots, blocked):
    book = book_of(pos("A", 10, lots=lots))          # max_per_ticker defaults to 2
    res = clamp(buy("A", qty=10), book)
    if blocked:
        assert res.dropped and res.tags == ("clamp:max_per_ticker",)
    else:
        assert (res.order.qty, res.tags) == (10, ())


def test_sell_without_position_is_no_short():
    res = clamp(Order("NEW", "SELL", 10, PX, "core", "tech"))
    assert res.dropped and res.tags == ("clamp:no_short",)


def test_sell_without_position_with_allow_short_is_clamped_like_a_buy():
    risk = RiskSettings(allow_short=True)
    res = clamp(Order("NEW", "SELL", 151, PX, "core", "tech"), risk=risk)
    assert res.order.side == "SELL"
    assert (res.order.qty, res.tags) == (150, ("clamp:per_name",))


def test_exit_of_held_long_passes_even_when_every_limit_is_exceeded():
    # 5_000 x 10 = 50_000: over per-name, single ticker, top-5 ... still an exit passes untouched
    book = book_of(pos("HUGE", 5_000), pos("B", 10, sector="b"))
    order = Order("HUGE", "SELL", 5_000, PX, "core", "tech")
    guard = GuardrailSettings(lot_size=10, max_positions=1, max_per_ticker=1)
    res = clamp(order, book, guard=guard)
    assert res.order == order and res.tags == ()
    partial = Order("HUGE", "SELL", 7, PX, "core", "tech")   # not a lot multiple: still untouched
    assert clamp(partial, book, guard=guard).order == partial


def test_buy_covering_a_held_short_is_an_exit():
    book = book_of(pos("S", -5_000))
    order = buy("S", qty=5_000)
    res = clamp(order, book)
    assert res.order == order and res.tags == ()


def test_non_positive_qty_is_dropped():
    res = clamp(buy(qty=0))
    assert res.dropped and res.tags == ("clamp:non_positive_qty",)
    res = clamp(buy(qty=-5))
    assert res.order.qty == 0 and res.tags == ("clamp:non_positive_qty",)


def test_no_net_liquidity_blocks():
    res = clamp(buy(qty=10), Book(0.0))
    assert res.dropped and res.tags == ("clamp:no_net_liquidity",)


def test_blocked_reason_priority_do_not_trade_first():
    guard = GuardrailSettings(lot_size=1, max_positions=1)
    book = book_of(pos("A", 10))
    order = Order("NEW", "SELL", 10, PX)
    assert blocked_reason(order, book, RISK, guard, ["NEW"]) == "clamp:do_not_trade"
    assert blocked_reason(order, book, RISK, guard) == "clamp:no_short"
    assert blocked_reason(buy(qty=10), book, RISK, guard) == "clamp:max_positions"
    assert blocked_reason(buy("A", qty=10), book, RISK, GUARD) is None


# --------------------------------------------------------------------------- lot size


@pytest.mark.parametrize("qty, expect_qty", [
    (150, 150),
    (151, 150),
    (149, 140),        # floored, never rounded up
    (1_000, 150),
    (10, 10),
])
def test_lot_size_floors_to_multiples(qty, expect_qty):
    guard = GuardrailSettings(lot_size=10, max_positions=8)
    res = clamp(buy(qty=qty), guard=guard)
    assert res.order.qty == expect_qty
    assert res.order.qty % 10 == 0


def test_lot_size_floors_the_remaining_room():
    guard = GuardrailSettings(lot_size=10, max_positions=8)
    book = book_of(pos("NEW", 101))                    # 1_010 held: room 490 = 49 sh -> 40
    res = clamp(buy(qty=200), book, guard=guard)
    assert (res.order.qty, res.tags) == (40, ("clamp:per_name",))


def test_lot_size_room_below_one_lot_drops():
    guard = GuardrailSettings(lot_size=10, max_positions=8)
    book = book_of(pos("NEW", 145))                    # room 50 = 5 sh < one lot
    res = clamp(buy(qty=100), book, guard=guard)
    assert res.dropped and res.tags == ("clamp:per_name",)


def test_lot_floor_alone_is_not_reported_as_a_per_name_cut():
    guard = GuardrailSettings(lot_size=10, max_positions=8)
    res = clamp(buy(qty=15), guard=guard)              # 150 cash, far under every limit
    assert res.order.qty == 10
    assert "clamp:per_name" not in res.tags


# --------------------------------------------------------------------------- batch


def test_clamp_batch_books_each_survivor_for_the_next_order():
    # tech holds 39_000 (room 1_000); first tech order takes 800, the second gets 200
    book = book_of(*(pos(f"T{i}", 975, sector="tech") for i in range(4)))
    out = clamp_batch([buy("N1", qty=80), buy("N2", qty=80)], book, RISK, GUARD)
    assert [(r.order.qty, r.tags) for r in out] == [(80, ()), (20, ("clamp:sector",))]
    assert book.positions["N1"].qty == 80 and book.positions["N2"].qty == 20
    assert book.exposure_by(lambda p: p.sector)["tech"] == pytest.approx(40_000.0)


def test_clamp_batch_does_not_book_dropped_orders():
    book = book_of(*(pos(f"T{i}", 1_000, sector="tech") for i in range(4)))   # sector full
    out = clamp_batch([buy("N1", qty=10)], book, RISK, GUARD)
    assert out[0].dropped
    assert "N1" not in book.positions


def test_clamp_batch_same_symbol_twice_counts_lots_and_exposure():
    book = Book(NL)
    out = clamp_batch([buy("A", qty=100), buy("A", qty=100), buy("A", qty=10)], book, RISK,
                      GUARD)
    assert [(r.order.qty, r.tags) for r in out] == [
        (100, ()), (50, ("clamp:per_name",)), (0, ("clamp:max_per_ticker",))]
    assert book.positions["A"].qty == 150
    assert book.positions["A"].lots == 2


def test_clamp_batch_positions_count_toward_max_positions():
    guard = GuardrailSettings(lot_size=1, max_positions=2)
    out = clamp_batch([buy("A", qty=1), buy("B", qty=1), buy("C", qty=1)], Book(NL), RISK, guard)
    assert [r.tags for r in out] == [(), (), ("clamp:max_positions",)]


def test_clamp_batch_exit_then_entry():
    book = book_of(pos("OLD", 100, sector="a"))
    guard = GuardrailSettings(lot_size=1, max_positions=1)
    out = clamp_batch([Order("OLD", "SELL", 100, PX, "core", "a"), buy("NEW", qty=10)], book,
                      RISK, guard)
    assert [(r.order.qty, r.tags) for r in out] == [(100, ()), (10, ())]
    assert set(book.positions) == {"NEW"}


def test_book_add_partial_exit_keeps_lots_and_reduces_qty():
    book = book_of(pos("A", 100, lots=2))
    book.add(Order("A", "SELL", 40, 12.0))
    assert book.positions["A"].qty == 60
    assert book.positions["A"].lots == 2
    assert book.positions["A"].price == 12.0


def test_oversized_sell_of_a_long_does_not_open_a_short():
    book = book_of(pos("A", 100))
    res = clamp(Order("A", "SELL", 1_000, PX, "core", "tech"), book)
    assert res.order.qty <= 100


# --------------------------------------------------------------------------- stops, SIP


def test_stop_levels_buy():
    stop, tp = stop_levels("BUY", 100.0, 2.0, RISK)
    assert stop == pytest.approx(96.4)                 # 100 - 1.8 * 2
    assert tp == pytest.approx(105.0)                  # 100 + 2.5 * 2
    assert stop < 100.0 < tp


def test_stop_levels_sell_mirrored():
    stop, tp = stop_levels("SELL", 100.0, 2.0, RISK)
    assert stop == pytest.approx(103.6)
    assert tp == pytest.approx(95.0)
    assert tp < 100.0 < stop


def test_stop_levels_use_tightened_multiples():
    risk = RiskSettings(initial_stop_atr=1.0, take_profit_atr=2.0)
    assert stop_levels("BUY", 50.0, 1.0, risk) == pytest.approx((49.0, 52.0))


@pytest.mark.parametrize("current, expected", [
    (105.0, 107.6),     # looser stop tightens to 110 - 1.2 * 2
    (107.6, 107.6),
    (108.0, 108.0),     # already tighter: kept
])
def test_trail_stop_buy_only_tightens(current, expected):
    assert trail_stop("BUY", 110.0, 2.0, current, RISK) == pytest.approx(expected)


@pytest.mark.parametrize("current, expected", [
    (95.0, 92.4),       # 90 + 1.2 * 2
    (92.4, 92.4),
    (92.0, 92.0),
])
def test_trail_stop_sell_only_tightens(current, expected):
    assert trail_stop("SELL", 90.0, 2.0, current, RISK) == pytest.approx(expected)


def test_trail_stop_buy_never_loosens_when_price_falls():
    stop = trail_stop("BUY", 110.0, 2.0, 96.4, RISK)   # 107.6
    later = trail_stop("BUY", 108.0, 2.0, stop, RISK)  # high-water lower: 105.6 < 107.6
    assert later == pytest.approx(107.6)


@pytest.mark.parametrize("profit, expected", [
    (1_000.0, 10.0), (0.01, 0.0001), (0.0, 0.0), (-500.0, 0.0)])
def test_sip_transfer(profit, expected):
    assert sip_transfer(profit, RISK) == pytest.approx(expected)


def test_sip_transfer_configured_share():
    assert sip_transfer(1_000.0, RiskSettings(sip_profit_share=0.05)) == pytest.approx(50.0)


# --------------------------------------------------------------------------- buckets, exposures


@pytest.mark.parametrize("symbol, price, adv, expected", [
    ("A", 4.99, 200_000.0, "penny"),
    ("A", 4.99, 1e9, "penny"),
    ("A", 4.99, 199_999.99, None),
    ("A", 4.99, math.nan, None),
    ("A", 5.0, 0.0, "core"),            # at the penny price boundary: core
    ("A", 5.01, 1e9, "core"),
    ("FUT", 1.0, 0.0, "fno"),           # F&O list wins over price and ADV
    ("FUT", 100.0, 1e9, "fno"),
])
def test_classify_bucket(symbol, price, adv, expected):
    risk = RiskSettings(buckets=BucketRules(fno_symbols=["FUT"]))
    assert classify_bucket(symbol, price, adv, risk) == expected


def test_classify_bucket_configured_rules():
    risk = RiskSettings(buckets=BucketRules(penny_max_price=2.0, penny_min_adv_usd=1_000.0))
    assert classify_bucket("A", 1.99, 1_000.0, risk) == "penny"
    assert classify_bucket("A", 1.99, 999.0, risk) is None
    assert classify_bucket("A", 2.0, 0.0, risk) == "core"


def test_exposures_fractions():
    book = book_of(pos("A", 1_000, sector="tech"),           # 10_000
                   pos("B", -500, sector="fin"),             # short 5_000 (gross)
                   pos("C", 40, bucket="penny", sector="tech"),   # 400
                   pos("D", 200, bucket="fno", sector="energy", delta=0.5))   # 1_000
    e = exposures(book)
    assert e["gross"] == pytest.approx(0.164)
    assert e["by_bucket"] == pytest.approx({"core": 0.15, "fno": 0.01, "penny": 0.004})
    assert e["by_sector"] == pytest.approx({"energy": 0.01, "fin": 0.05, "tech": 0.104})
    assert e["top5"] == pytest.approx(0.164)
    assert e["largest_name"] == pytest.approx(0.10)
    assert e["n_positions"] == 4
    assert list(e["by_bucket"]) == ["core", "fno", "penny"]      # sorted keys


def test_exposures_top5_excludes_the_sixth():
    book = book_of(*(pos(f"X{i}", 100 * (i + 1), sector=f"s{i}") for i in range(6)))
    # exposures 1_000 .. 6_000; top five = 2_000 + ... + 6_000 = 20_000
    assert exposures(book)["top5"] == pytest.approx(0.20)
    assert exposures(book)["gross"] == pytest.approx(0.21)


def test_exposures_empty_and_zero_nl():
    e = exposures(Book(NL))
    assert e["gross"] == 0.0 and e["top5"] == 0.0 and e["largest_name"] == 0.0
    assert e["n_positions"] == 0
    z = exposures(book_of(pos("A", 10), nl=0.0))
    assert math.isnan(z["gross"]) and math.isnan(z["largest_name"])


def test_book_from_frame():
    frame = pd.DataFrame({"symbol": ["A", "B"], "qty": [10, 20], "price": [5.0, 10.0],
                          "bucket": ["core", "fno"], "sector": ["tech", "fin"],
                          "delta": [1.0, 0.5], "lots": [1, 2]})
    book = book_from_frame(frame, NL)
    assert book.net_liquidity == NL
    assert book.positions["B"] == Position("B", 20, 10.0, "fno", "fin", 0.5, 2)
    assert book.positions["B"].exposure == pytest.approx(100.0)
    assert book_from_frame(None, NL).positions == {}


# --------------------------------------------------------------------------- non-finite limits


def test_nan_per_name_cap_fails_closed_in_the_clamp():
    # whatever the settings let through, a NaN cap must never let an order trade
    risk = RiskSettings.model_construct(**{**RISK.__dict__, "per_name": {"core": math.nan}})
    res = clamp(buy(qty=10), risk=risk)
    assert res.dropped and res.tags == ("clamp:per_name",)


def test_risk_settings_refuse_nan_per_name():
    with pytest.raises(ValidationError):
        RiskSettings(per_name={"core": math.nan})
