"""Business rules: each rule against a hand-worked list, then invariants and a slow reference on random inputs."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shopsense.domain import IdIndex
from shopsense.features.interactions import Catalog
from shopsense.ranking.rules import CATEGORY_SEPARATOR, PAD, Boost, Pin, Ranked, RuleConfig, apply_rules

IDS = IdIndex(list("abcdefgh"))
#           a  b  c  d  e   f   g  h
CATEGORY = [1, 2, 2, 0, 3, -1, 0, 0]  # Books, Home, Home > Kitchen, Homeware
BRAND = [0, 1, 1, 0, -1, 0, 1, 0]  # Acme, Zed
PRICE = [10, 20, 25, np.nan, 5, 15, 30, 12]
AVAILABLE = [True, True, True, True, True, False, True, True]
GROUP = [-1, 0, 0, -1, -1, -1, 1, 1]  # b, c are variants; so are g, h
CATALOG = Catalog(
    text=tuple("abcdefgh"),
    category=np.array(CATEGORY),
    categories=("Books", "Home", "Home > Kitchen", "Homeware"),
    brand=np.array(BRAND),
    brands=("Acme", "Zed"),
    price=np.array(PRICE, dtype=float),
    available=np.array(AVAILABLE),
    group=np.array(GROUP, dtype=np.int64),
)
# Row 0 holds every item, best first; row 1 a shuffled subset with padding.
ITEMS = np.array([[0, 1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1, PAD]])
SCORES = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2], [0.9, 0.1, 0.8, 0.7, 0.2, 0.3, 0.4, 0.0]])


def _run(config: RuleConfig | None = None, k: int = 8, purchased: sp.csr_matrix | None = None, **kw: Any) -> Ranked:
    return apply_rules(
        kw.get("items", ITEMS),
        kw.get("scores", SCORES),
        k,
        config=config or RuleConfig(),
        catalog=kw.get("catalog", CATALOG),
        item_ids=IDS,
        purchased=purchased,
    )


def _ids(ranked: Ranked, row: int = 0) -> str:
    return "".join(IDS.ids([int(i) for i in ranked.items[row] if i != PAD]))


def test_defaults_drop_unavailable_and_collapse_variants_to_the_best_scored() -> None:
    ranked = _run()
    # f is unavailable; c loses to its variant b (0.8 > 0.7), h to g (0.3 > 0.2).
    assert _ids(ranked) == "abdeg"
    assert ranked.items[0].tolist() == [0, 1, 3, 4, 6, PAD, PAD, PAD]
    assert ranked.scores[0].tolist() == [0.9, 0.8, 0.6, 0.5, 0.3, -np.inf, -np.inf, -np.inf]
    assert not ranked.pinned.any()
    # Row 1: h (0.9) beats g, b (0.4) beats c (0.3), f unavailable, padding ignored.
    assert _ids(ranked, 1) == "hebd"
    assert ranked.items.shape == ranked.scores.shape == ranked.pinned.shape == (2, 8)


def test_top_k_cuts_and_ties_go_to_the_lower_item_index() -> None:
    ranked = _run(k=2, items=np.array([[4, 3, 0]]), scores=np.array([[0.5, 0.5, 0.1]]))
    assert ranked.items.tolist() == [[3, 4]]


def test_purchased_items_are_hidden_unless_their_category_repeats() -> None:
    bought = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0, 0, 0], [0] * 8]))
    assert _ids(_run(purchased=bought)) == "cdeg"  # b gone, so its variant c takes the group's slot
    # "Home > Kitchen" makes b repeatable; a (plain "Home") stays hidden.
    assert _ids(_run(RuleConfig(repeatable_categories=("Home > Kitchen",)), purchased=bought)) == "bdeg"
    assert _ids(_run(RuleConfig(exclude_purchased=False), purchased=bought)) == "abdeg"
    assert _ids(_run(purchased=bought), 1) == "hebd"  # row 1 bought nothing


def test_items_of_an_excluded_kind_are_hidden_by_default() -> None:
    # a is postage ("service"), d a gift card: only service lines are hidden unless told otherwise.
    catalog = dataclasses.replace(
        CATALOG, kind=np.array([0, -1, -1, 1, -1, -1, -1, -1], dtype=np.int32), kinds=("service", "voucher")
    )
    assert _ids(_run(catalog=catalog)) == "bdeg"
    assert _ids(_run(RuleConfig(exclude_kinds=()), catalog=catalog)) == "abdeg"
    assert _ids(_run(RuleConfig(exclude_kinds=("service", "voucher")), catalog=catalog)) == "beg"
    assert _ids(_run()) == "abdeg"  # a catalogue without kinds hides nothing


def test_include_and_exclude_categories_match_path_prefixes() -> None:
    # "Home" covers "Home > Kitchen" but not "Homeware"; f (unknown category) fails an include list.
    assert _ids(_run(RuleConfig(include_categories=("Home",)))) == "ab"
    assert _ids(_run(RuleConfig(include_categories=("Home > Kitchen", "Homeware")))) == "be"
    assert _ids(_run(RuleConfig(exclude_categories=("Home",)))) == "deg"
    # An unknown category does not fail an exclude list: f shows once availability is ignored.
    assert _ids(_run(RuleConfig(exclude_categories=("Home",), exclude_unavailable=False))) == "defg"


def test_brand_filters_run_before_variant_collapse() -> None:
    # g (Zed) is filtered out first, so its variant h (Acme) keeps the group's slot; e has no brand.
    assert _ids(_run(RuleConfig(include_brands=("Acme",)))) == "adh"
    assert _ids(_run(RuleConfig(exclude_brands=("Acme",)))) == "beg"


def test_price_range_is_inclusive_and_hides_unknown_prices() -> None:
    # a 10 and b 20 are on the bounds; h 12 inside; d has no price; c 25, g 30, e 5 outside; f unavailable.
    assert _ids(_run(RuleConfig(min_price=10, max_price=20))) == "abh"
    assert _ids(_run(RuleConfig(max_price=12))) == "aeh"


def test_boosts_multiply_and_reorder() -> None:
    boosts = (
        Boost(field="category", value="Books", factor=2),
        Boost(field="item", value="e", factor=0.1),
        Boost(field="brand", value="Zed", factor=0.5),
        Boost(field="item", value="not-an-item", factor=9),  # matches nothing
    )
    ranked = _run(RuleConfig(boosts=boosts))
    # d 0.6*2, a 0.9, b 0.8*0.5, c 0.7*0.5 (loses to b), e 0.5*0.1, g 0.3*2*0.5 (loses to h), h 0.2*2.
    # b and h tie at 0.4: the lower index, b, goes first.
    assert _ids(ranked) == "dabhe"
    assert ranked.scores[0, :5] == pytest.approx([1.2, 0.9, 0.4, 0.4, 0.05])


def test_pins_move_to_their_slots_and_the_list_shifts_down() -> None:
    ranked = _run(RuleConfig(pins=(Pin(item_id="d", position=3), Pin(item_id="e", position=1))))
    # Unpinned list a b d e g; d and e leave it, then e goes to slot 1 and d to slot 3.
    assert _ids(ranked) == "eadbg"
    assert ranked.pinned[0, :5].tolist() == [True, False, True, False, False]
    assert ranked.scores[0, :5].tolist() == [0.5, 0.9, 0.6, 0.8, 0.3]


def test_a_pin_past_the_end_goes_last_and_past_k_leaves_the_page() -> None:
    config = RuleConfig(pins=(Pin(item_id="a", position=7),))
    assert _ids(_run(config)) == "bdega"
    assert _ids(_run(config, k=3)) == "bde"
    assert _ids(_run(config, k=3), 1) == "heb"  # row 1 never had a: same rule


def test_pins_of_items_not_in_a_row_score_nan() -> None:
    ranked = _run(RuleConfig(pins=(Pin(item_id="a", position=2),)))
    assert _ids(ranked, 1) == "haebd"
    assert np.isnan(ranked.scores[1, 1])
    assert ranked.scores[0, 1] == 0.9  # a was a candidate in row 0


def test_pins_pass_the_hard_filters_per_row() -> None:
    bought = sp.csr_matrix(np.array([[0, 0, 0, 0, 0, 0, 0, 1], [0] * 8]))
    config = RuleConfig(pins=(Pin(item_id="f", position=1), Pin(item_id="h", position=2)))
    ranked = _run(config, purchased=bought)
    assert _ids(ranked) == "abdeg"  # f unavailable everywhere; h bought in row 0
    assert _ids(ranked, 1) == "ehbd"
    assert ranked.pinned[1].tolist() == [False, True] + [False] * 6
    excluded = RuleConfig(pins=(Pin(item_id="a", position=1),), exclude_categories=("Home",))
    assert "a" not in _ids(_run(excluded))


def test_a_pinned_variant_replaces_its_group() -> None:
    ranked = _run(RuleConfig(pins=(Pin(item_id="c", position=1), Pin(item_id="b", position=2))))
    # c wins its group by being pinned earlier; b (same group) is not placed.
    assert _ids(ranked) == "cadeg"
    assert _ids(_run(RuleConfig(pins=(Pin(item_id="c", position=1),), collapse_variants=False))) == "cabdegh"


def test_unknown_pinned_id_is_named() -> None:
    with pytest.raises(ValueError, match="'zzz'"):
        _run(RuleConfig(pins=(Pin(item_id="zzz", position=1),)))


def test_missing_catalogue_fields() -> None:
    bare = Catalog(text=CATALOG.text, category=CATALOG.category, categories=CATALOG.categories)
    assert _ids(_run(catalog=bare)) == "abcdefgh"  # nothing unavailable, no variants
    assert _ids(_run(RuleConfig(include_brands=("Acme",)), catalog=bare)) == ""
    assert _ids(_run(RuleConfig(exclude_brands=("Acme",)), catalog=bare)) == "abcdefgh"
    assert _ids(_run(RuleConfig(min_price=0), catalog=bare)) == ""
    assert _ids(_run(RuleConfig(boosts=(Boost(field="brand", value="Acme", factor=9),)), catalog=bare)) == "abcdefgh"


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        _run(k=0)
    with pytest.raises(ValueError, match="one shape"):
        _run(scores=SCORES[:, :3])
    with pytest.raises(ValueError, match="item indices"):
        _run(items=ITEMS + 1)
    with pytest.raises(ValueError, match="finite"):
        _run(scores=np.where(ITEMS == 2, np.nan, SCORES))
    with pytest.raises(ValueError, match="purchased"):
        _run(purchased=sp.csr_matrix((1, 8)))
    with pytest.raises(ValidationError, match="greater than 0"):
        Boost(field="item", value="a", factor=0)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Pin(item_id="a", position=0)
    with pytest.raises(ValidationError, match="above max_price"):
        RuleConfig(min_price=5, max_price=1)
    with pytest.raises(ValidationError, match="repeat position 1"):
        RuleConfig(pins=(Pin(item_id="a", position=1), Pin(item_id="b", position=1)))
    with pytest.raises(ValidationError, match="extra"):
        RuleConfig(exclude_brand=("x",))  # type: ignore[call-arg]


def test_merged_overrides_one_request() -> None:
    base = RuleConfig(exclude_categories=("Home",), boosts=(Boost(field="brand", value="Zed", factor=2),))
    merged = base.merged({"exclude_categories": ["Books"], "pins": [{"item_id": "e", "position": 1}]})
    assert merged.exclude_categories == ("Books",)
    assert merged.pins == (Pin(item_id="e", position=1),)
    assert merged.boosts == base.boosts  # untouched keys keep the configured value
    assert base.exclude_categories == ("Home",)  # the pipeline's config is unchanged
    with pytest.raises(ValueError, match=r"unknown rule override.*exclude_brand;"):
        base.merged({"exclude_brand": ["Acme"]})
    with pytest.raises(ValidationError, match="min_price"):
        base.merged({"min_price": "cheap"})


# ---- random inputs: invariants, and agreement with a slow row-by-row reference -----------------------------

NAMES = ("A", "A > x", "A > x > y", "B", "AB")


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, RuleConfig, Catalog, sp.csr_matrix | None]:
    n_items = draw(st.integers(1, 10))
    codes = st.lists(st.integers(-1, len(NAMES) - 1), min_size=n_items, max_size=n_items)
    has = draw(st.fixed_dictionaries({f: st.booleans() for f in ("brand", "price", "available", "group")}))
    catalog = Catalog(
        text=("",) * n_items,
        category=np.array(draw(codes), dtype=np.int32),
        categories=NAMES,
        brand=np.array(draw(codes), dtype=np.int32) if has["brand"] else None,
        brands=NAMES if has["brand"] else (),
        price=np.array(draw(st.lists(st.sampled_from([np.nan, 1.0, 2.0, 3.0]), min_size=n_items, max_size=n_items)))
        if has["price"]
        else None,
        available=np.array(draw(st.lists(st.booleans(), min_size=n_items, max_size=n_items)))
        if has["available"]
        else None,
        group=np.array(draw(st.lists(st.integers(-1, 2), min_size=n_items, max_size=n_items)), dtype=np.int64)
        if has["group"]
        else None,
    )
    rows, width = draw(st.integers(1, 3)), draw(st.integers(0, 8))
    cells = st.lists(st.integers(PAD, n_items - 1), min_size=rows * width, max_size=rows * width)
    items = np.array(draw(cells), dtype=np.int64).reshape(rows, width)
    # Coarse scores make ties common, so tie-breaking is exercised.
    grid = st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]), min_size=rows * width, max_size=rows * width)
    scores = np.array(draw(grid), dtype=float).reshape(rows, width)
    purchased = None
    if draw(st.booleans()):
        bought = st.lists(st.booleans(), min_size=rows * n_items, max_size=rows * n_items)
        purchased = sp.csr_matrix(np.array(draw(bought), dtype=float).reshape(rows, n_items))
    names = st.lists(st.sampled_from(NAMES), max_size=2).map(tuple)
    item_id = st.integers(0, n_items - 1).map(str)
    prices = st.none() | st.sampled_from([1.0, 2.0])
    pins = st.lists(
        st.builds(Pin, item_id=item_id, position=st.integers(1, 6)),
        max_size=3,
        unique_by=(lambda p: p.item_id, lambda p: p.position),
    )
    boost = st.one_of(
        st.builds(Boost, field=st.just("item"), value=item_id, factor=st.sampled_from([0.5, 2.0])),
        st.builds(
            Boost, field=st.sampled_from(["category", "brand"]), value=st.sampled_from(NAMES), factor=st.just(4.0)
        ),
    )
    low, high = draw(prices), draw(prices)
    config = RuleConfig(
        exclude_purchased=draw(st.booleans()),
        repeatable_categories=draw(names),
        exclude_unavailable=draw(st.booleans()),
        include_categories=draw(names),
        exclude_categories=draw(names),
        include_brands=draw(names),
        exclude_brands=draw(names),
        min_price=low if high is None or low is None else min(low, high),
        max_price=high if high is None or low is None else max(low, high),
        boosts=tuple(draw(st.lists(boost, max_size=3))),
        pins=tuple(draw(pins)),
        collapse_variants=draw(st.booleans()),
    )
    return items, scores, draw(st.integers(1, 6)), config, catalog, purchased


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + CATEGORY_SEPARATOR) for p in prefixes)


def _allowed(item: int, row: int, config: RuleConfig, catalog: Catalog, purchased: sp.csr_matrix | None) -> bool:
    """The hard filters for one item, written out item by item."""
    code = int(catalog.category[item])
    category = catalog.categories[code] if code >= 0 else None
    brand_code = int(catalog.brand[item]) if catalog.brand is not None else -1
    brand = catalog.brands[brand_code] if brand_code >= 0 else None
    price = float(catalog.prices()[item])
    bought = config.exclude_purchased and purchased is not None and purchased[row, item] > 0
    if bought and (category is None or not _under(category, config.repeatable_categories)):
        return False
    if config.exclude_unavailable and catalog.available is not None and not catalog.available[item]:
        return False
    if config.include_categories and (category is None or not _under(category, config.include_categories)):
        return False
    if category is not None and _under(category, config.exclude_categories):
        return False
    if config.include_brands and brand not in config.include_brands:
        return False
    if brand in config.exclude_brands:
        return False
    if config.min_price is not None or config.max_price is not None:
        low, high = config.min_price or 0.0, config.max_price if config.max_price is not None else np.inf
        if np.isnan(price) or not low <= price <= high:
            return False
    return True


def _group(item: int, config: RuleConfig, catalog: Catalog) -> int:
    """The item's variant group when variants collapse, else a key of its own."""
    if config.collapse_variants and catalog.group is not None and catalog.group[item] >= 0:
        return int(catalog.group[item])
    return -1 - item


def _eligible_pins(row: int, config: RuleConfig, catalog: Catalog, purchased: sp.csr_matrix | None) -> list[Pin]:
    chosen: list[Pin] = []
    for pin in sorted(config.pins, key=lambda p: p.position):
        item = int(pin.item_id)
        taken = {_group(int(p.item_id), config, catalog) for p in chosen}
        if _allowed(item, row, config, catalog, purchased) and _group(item, config, catalog) not in taken:
            chosen.append(pin)
    return chosen


def _reference(
    items: np.ndarray, scores: np.ndarray, k: int, config: RuleConfig, catalog: Catalog, purchased: Any
) -> list[list[int]]:
    """The rules one row and one item at a time, as a person would apply them."""
    out = []
    for row in range(items.shape[0]):
        best: dict[int, float] = {}
        for item, score in zip(items[row].tolist(), scores[row].tolist(), strict=True):
            if item == PAD or not _allowed(item, row, config, catalog, purchased):
                continue
            factor = 1.0
            for boost in config.boosts:
                code = int(catalog.category[item])
                brand = int(catalog.brand[item]) if catalog.brand is not None else -1
                if (
                    (boost.field == "item" and boost.value == str(item))
                    or (boost.field == "category" and code >= 0 and _under(catalog.categories[code], (boost.value,)))
                    or (boost.field == "brand" and brand >= 0 and catalog.brands[brand] == boost.value)
                ):
                    factor *= boost.factor
            best[item] = max(best.get(item, -np.inf), score * factor)
        pins = _eligible_pins(row, config, catalog, purchased)
        gone = {_group(int(p.item_id), config, catalog) for p in pins}
        listed: list[int] = []
        for item in sorted(best, key=lambda i: (-best[i], i)):
            group = _group(item, config, catalog)
            if group not in gone:
                listed.append(item)
                gone.add(group)
        for pin in pins:
            listed.insert(min(pin.position - 1, len(listed)), int(pin.item_id))
        out.append(listed[:k] + [PAD] * (k - len(listed[:k])))
    return out


@settings(max_examples=100, deadline=None)
@given(cases())
def test_random_rules_keep_their_invariants(case: Any) -> None:
    items, scores, k, config, catalog, purchased = case
    ids = IdIndex([str(i) for i in range(len(catalog.category))])
    ranked = apply_rules(items, scores, k, config=config, catalog=catalog, item_ids=ids, purchased=purchased)
    again = apply_rules(items, scores, k, config=config, catalog=catalog, item_ids=ids, purchased=purchased)
    assert np.array_equal(ranked.items, again.items)
    assert np.array_equal(ranked.scores, again.scores, equal_nan=True)
    assert np.array_equal(ranked.pinned, again.pinned)
    assert ranked.items.shape == (items.shape[0], k)
    for row in range(items.shape[0]):
        shown = [int(i) for i in ranked.items[row] if i != PAD]
        assert ranked.items[row, : len(shown)].tolist() == shown  # padding only at the end
        assert len(set(shown)) == len(shown)
        assert all(_allowed(i, row, config, catalog, purchased) for i in shown)
        if config.collapse_variants and catalog.group is not None:
            groups = [int(catalog.group[i]) for i in shown if catalog.group[i] >= 0]
            assert len(set(groups)) == len(groups)
        free = ranked.scores[row, : len(shown)][~ranked.pinned[row, : len(shown)]]
        assert (np.diff(free) <= 0).all()
        for pin in _eligible_pins(row, config, catalog, purchased):
            if int(pin.item_id) not in shown:
                assert len(shown) == k  # pushed off a full page
                continue
            at = shown.index(int(pin.item_id))
            assert at <= pin.position - 1
            if at < pin.position - 1:  # the list ran short: the pin went last, only later pins follow it
                assert ranked.pinned[row, at : len(shown)].all()
    assert ranked.items.tolist() == _reference(items, scores, k, config, catalog, purchased)
