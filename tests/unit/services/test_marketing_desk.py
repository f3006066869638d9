"""The dashboard's marketing questions over a real store: expressions checked as typed, saved segments, the
RFM grid, CSV downloads, lookalikes, message previews, campaigns listed, and the design calculator."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from shopsense.errors import ConfigError
from shopsense.marketing.campaigns import CampaignConfig
from shopsense.marketing.experiments import minimum_detectable_effect
from shopsense.services import marketing_desk as desk
from shopsense.services.data import DataService
from shopsense.services.marketing import MarketingService
from shopsense.settings import load_settings
from tests.conftest import DATA


@pytest.fixture(scope="module")
def marketing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MarketingService]:
    settings = load_settings(data_dir=tmp_path_factory.mktemp("desk") / "data")
    service = DataService(settings)
    service.import_dataset("online-retail", [DATA / "online_retail_sample.csv"])
    marketing = MarketingService(settings, service.store)
    marketing.build_profiles()
    yield marketing
    service.close()


def test_a_valid_expression_answers_its_size_and_revenue_share(marketing: MarketingService) -> None:
    check = desk.check_expression(marketing, "monetary > 200")
    monetary = np.nan_to_num(marketing.profiles().column("monetary").to_numpy(zero_copy_only=False))
    assert check.ok and check.message is None
    assert check.customers == int((monetary > 200).sum()) > 0
    assert check.share == pytest.approx(check.customers / len(monetary))
    assert check.revenue_share is not None and check.revenue_share > 0.5, "the big spenders hold most revenue"


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("monetry > 200", "did you mean 'monetary'?", 0),
        ("frequency >= 2 and recency_days = 3", "use '==' to compare", 32),
        ("frequency >=", "", 12),
    ],
)
def test_a_bad_expression_answers_where_and_why(
    marketing: MarketingService, text: str, message: str, position: int
) -> None:
    check = desk.check_expression(marketing, text)
    assert not check.ok and check.customers is None
    assert message in (check.message or "") and check.position == position
    expression, carets = (check.caret or "").split("\n")
    assert expression.strip() == text and carets.index("^") - expression.index(text[0]) == position
    assert check.to_dict()["position"] == position


def test_segments_are_saved_checked_reported_and_deleted(marketing: MarketingService) -> None:
    assert desk.saved_report(marketing) is None
    marketing.save_segment("big", "monetary > 200")
    marketing.save_segment("repeat", "frequency >= 2")
    with pytest.raises(ConfigError, match="monetary"):
        marketing.save_segment("typo", "monetry > 1")
    with pytest.raises(ConfigError, match="segment name"):
        marketing.save_segment("bad\nname", "frequency >= 2")
    assert marketing.saved_segments() == {"big": "monetary > 200", "repeat": "frequency >= 2"}
    report = desk.saved_report(marketing)
    assert report is not None and report.stats.column("segment").to_pylist() == ["big", "repeat"]
    assert report.overlaps.num_rows == 1
    marketing.delete_segment("big")
    marketing.delete_segment("repeat")
    assert marketing.saved_segments() == {}


def test_the_rfm_grid_counts_every_purchaser_once(marketing: MarketingService) -> None:
    grid = desk.rfm_grid(marketing)
    profiles = marketing.profiles()
    purchasers = int(np.sum(profiles.column("r_score").to_numpy(zero_copy_only=False) > 0))
    assert sum(map(sum, grid.customers)) == purchasers > 0
    assert all(len(row) == 5 for row in grid.customers + grid.segments)
    champions = [grid.segments[r][f] for r in range(5) for f in range(5) if grid.customers[r][f]]
    assert "" not in champions, "every occupied cell is named"


def test_csv_downloads_neutralise_formulas() -> None:
    table = pa.table({"user_id": ["=HYPERLINK(1)", "u2"], "score": [-1.5, 0.5]})
    rows = list(csv.reader(io.StringIO(desk.csv_bytes(table).decode())))
    assert rows == [["user_id", "score"], ["'=HYPERLINK(1)", "-1.5"], ["u2", "0.5"]]


def test_segment_membership_downloads_one_row_per_membership(marketing: MarketingService) -> None:
    report = marketing.segments({"big": "monetary > 200", "repeat": "frequency >= 2"})
    rows = list(csv.DictReader(io.StringIO(desk.csv_bytes(report.membership()).decode())))
    assert len(rows) == sum(r["customers"] for r in report.stats.to_pylist())
    assert {r["user_id"] for r in rows if r["segment"] == "big"} == set(report.members("big"))


def test_lookalikes_leave_the_seeds_out_and_say_why(marketing: MarketingService) -> None:
    seeds = set(marketing.segments({"s": "monetary > 1000"}).members("s"))
    found = desk.lookalike_audience(marketing, "monetary > 1000", 5)
    assert found.num_rows == 5 and not seeds & set(found.column("user_id").to_pylist())
    reasons = found.column("main_reason").to_pylist()
    reason = re.compile(r"likes .+ as the seeds do|.+, as most seeds are|profile -?[0-9.]+ similar .+")
    assert all(reason.fullmatch(r) for r in reasons)
    with pytest.raises(ConfigError, match="selects nobody"):
        desk.lookalike_audience(marketing, "monetary > 1e12", 5)


def test_message_previews_fill_the_template_from_each_customers_items() -> None:
    items = {"u1": [{"item_id": "i1", "title": "Red mug", "score": 0.9, "reason": "Bought with your teapot"}]}
    previews = desk.preview_messages(lambda u: items.get(u, []), ["u1", "u2", "u1"], "Hi $user_id: $first_title")
    assert [p["message"] for p in previews] == ["Hi u1: Red mug", None], "one per customer; none without items"
    assert previews[0]["items"][0]["reason"] == "Bought with your teapot"
    with pytest.raises(ConfigError, match="first_tilte"):
        desk.preview_messages(lambda u: [], ["u1"], "$first_tilte")


def test_campaigns_are_listed_with_their_users_per_arm(marketing: MarketingService) -> None:
    config = CampaignConfig.parse(
        {
            "name": "spring",
            "channel": "email",
            "start": datetime(2011, 1, 1, tzinfo=UTC),
            "end": datetime(2011, 2, 1, tzinfo=UTC),
            "variants": [{"name": "control", "weight": 0.5, "is_control": True}, {"name": "mail", "weight": 0.5}],
        }
    )
    marketing.save_campaign(config)
    (row,) = desk.campaigns_overview(marketing)
    assert row.config == config and row.assigned == {"control": 0, "mail": 0}
    marketing.assign("spring", segment="frequency >= 1")
    (row,) = desk.campaigns_overview(marketing)
    assert sum(row.assigned.values()) > 0 and set(row.assigned) == {"control", "mail"}


def test_the_design_calculator_solves_either_way() -> None:
    by_n = desk.design(0.05, n_per_arm=2000)
    assert by_n.mde_abs == pytest.approx(minimum_detectable_effect(2000, 0.05))
    by_mde = desk.design(0.05, mde_abs=by_n.mde_abs)
    assert by_mde.n_per_arm == 2000, "n -> MDE -> n round-trips"
    ns = [n for n, _ in by_n.curve]
    mdes = [m for _, m in by_n.curve]
    assert 2000 in ns and ns == sorted(ns) and mdes == sorted(mdes, reverse=True), "more users, smaller lifts"
    with pytest.raises(ConfigError, match="either"):
        desk.design(0.05)


def test_a_lookalike_s_reason_is_the_seeds_shared_interest_when_it_has_it() -> None:
    tags = pa.struct([("tag", pa.string()), ("weight", pa.float64())])
    profiles = pa.table(
        {
            "user_id": ["s1", "s2", "a", "b"],
            "interests": pa.array(
                [[{"tag": "category:Kitchen", "weight": 1.0}], [{"tag": "category:Kitchen", "weight": 0.5}],
                 [{"tag": "category:Kitchen", "weight": 0.25}], [{"tag": "brand:Acme", "weight": 1.0}]],
                pa.list_(tags),
            ),
        }
    )  # fmt: skip
    tag, weights = desk._seed_interest(profiles, np.array([True, True, False, False]))
    assert tag == "category:Kitchen" and weights.tolist() == [1.0, 0.5, 0.25, 0.0]
    assert desk._tag_label("brand:Acme") == "brand Acme"
    assert desk._tag_label("category:Home > Kitchen") == "Home > Kitchen"


def test_the_segments_overview_matches_the_services_reports(marketing: MarketingService) -> None:
    marketing.save_segment("big", "monetary > 200")
    marketing.save_segment("repeat", "frequency >= 2")
    try:
        seen = desk.segment_overview(marketing)
        expected = marketing.segments({"big": "monetary > 200", "repeat": "frequency >= 2"})
        assert seen.report is not None and seen.report.stats.equals(expected.stats)
        assert seen.report.overlaps.equals(expected.overlaps)
        assert seen.rfm.stats.equals(marketing.rfm().stats) and seen.grid == desk.rfm_grid(marketing)
        assert ("monetary", "double") in seen.fields and all(name != "user_id" for name, _ in seen.fields)
    finally:
        marketing.delete_segment("big")
        marketing.delete_segment("repeat")
    assert desk.segment_overview(marketing).report is None


def test_the_profiles_version_moves_with_each_build(marketing: MarketingService) -> None:
    profiles = marketing.profiles()
    assert desk.profiles_version(profiles) == desk.profiles_version(marketing.profiles())
    assert desk.profiles_version(profiles) != desk.profiles_version(profiles.slice(1))
    assert desk.cluster_summary(marketing, profiles) == desk.cluster_summary(marketing)


def test_the_rfm_grid_names_each_cell_by_its_most_common_segment_ties_alphabetically() -> None:
    rng = np.random.default_rng(7)
    n = 2_000
    r, f = rng.integers(0, 6, n), rng.integers(0, 6, n)
    names = rng.choice(np.array(["Champions", "Loyal", "At risk", "", None], dtype=object), n).tolist()
    money = rng.gamma(2.0, 30.0, n)
    profiles = pa.table(
        {"user_id": [f"u{i}" for i in range(n)], "r_score": r, "f_score": f, "monetary": money, "rfm_segment": names}
    )
    grid = desk._grid(profiles)
    for ri in desk.SCORES:
        for fi in desk.SCORES:
            cell = (r == ri) & (f == fi)
            assert grid.customers[ri - 1][fi - 1] == int(cell.sum())
            assert grid.revenue[ri - 1][fi - 1] == pytest.approx(round(float(money[cell].sum()), 2))
            found = sorted(name for name, inside in zip(names, cell, strict=True) if inside and name)
            best = max(sorted(set(found)), key=found.count) if found else ""
            assert grid.segments[ri - 1][fi - 1] == best
    tie = pa.table({"user_id": ["a", "b"], "r_score": [1, 1], "f_score": [1, 1], "monetary": [1.0, 2.0],
                    "rfm_segment": ["Loyal", "At risk"]})  # fmt: skip
    assert desk._grid(tie).segments[0][0] == "At risk", "a tie goes to the first name alphabetically"
