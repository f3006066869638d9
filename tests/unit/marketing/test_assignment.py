"""Deterministic assignment: the hash is the documented one, stable, balanced, salted, and refuses bad splits."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from shopsense.errors import ConfigError
from shopsense.marketing.assignment import Variant, assign, unit_hash, validate_variants

HALF = [Variant("control", 0.5, is_control=True), Variant("B", 0.5)]
TEN_NINETY = [Variant("holdout", 0.1, is_control=True), Variant("mail", 0.9)]
IDS = [f"user-{i}" for i in range(100_000)]


def reference_unit_hash(salt: str, user_id: str) -> float:
    """The spec, byte by byte in plain Python: FNV-1a 64 of f"{salt}:{user_id}", fmix64, top 53 bits."""
    mask = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for byte in f"{salt}:{user_id}".encode():
        h = ((h ^ byte) * 0x100000001B3) & mask
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & mask
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & mask
    h ^= h >> 33
    return (h >> 11) / 2**53


def test_hash_is_pinned_so_other_processes_and_versions_agree() -> None:
    # Literal values: a change of hash, encoding or separator would silently move every user.
    assert unit_hash(["u1", "x" * 40], "camp").tolist() == [0.5580259596451803, 0.4745958774354265]


def test_vectorised_hash_matches_the_byte_by_byte_spec() -> None:
    ids = ["a", "ab", "A", "user 7", "é漢字", "x" * 37, "0", ":", "42:7"]
    expected = [reference_unit_hash("spring-24", i) for i in ids]
    assert unit_hash(ids, "spring-24").tolist() == expected
    # Arrow inputs with an offset (a slice) and several chunks read the same bytes.
    sliced = pa.array(["skip", *ids], type=pa.string()).slice(1)
    assert unit_hash(sliced, "spring-24").tolist() == expected
    chunked = pa.chunked_array([ids[:4], ids[4:]], type=pa.large_string())
    assert unit_hash(chunked, "spring-24").tolist() == expected


def test_hash_lies_in_the_unit_interval_and_is_uniform() -> None:
    u = unit_hash(IDS, "uniform")
    assert u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def test_same_input_gives_same_output_and_others_do_not_move_a_user() -> None:
    full = assign(IDS[:5000], "s1", HALF)
    assert np.array_equal(full, assign(IDS[:5000], "s1", HALF))
    subset = assign(IDS[1000:2000:7], "s1", HALF)
    assert np.array_equal(subset, full[1000:2000:7])
    shuffled = np.random.default_rng(0).permutation(5000)
    assert np.array_equal(assign([IDS[i] for i in shuffled], "s1", HALF), full[shuffled])


@pytest.mark.parametrize("variants", [HALF, TEN_NINETY], ids=["50/50", "10/90"])
def test_split_is_balanced(variants: list[Variant]) -> None:
    arms = assign(IDS, "balance", variants)
    observed = np.array([(arms == v.name).sum() for v in variants])
    expected = np.array([v.weight for v in variants]) * len(IDS)
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_three_arms_follow_cumulative_weights_in_order() -> None:
    variants = [Variant("c", 0.2, is_control=True), Variant("b", 0.3), Variant("a", 0.5)]
    u = unit_hash(IDS[:2000], "three")
    arms = assign(IDS[:2000], "three", variants)
    assert np.array_equal(arms, np.where(u < 0.2, "c", np.where(u < 0.5, "b", "a")))


def test_salt_reshuffles_assignment() -> None:
    a, b = assign(IDS[:20_000], "campaign-1", HALF), assign(IDS[:20_000], "campaign-2", HALF)
    assert 0.48 < (a == b).mean() < 0.52  # independent arms agree half the time


def test_empty_input_gives_empty_output() -> None:
    assert assign([], "s", HALF).shape == (0,)


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([Variant("B", 0.5), Variant("C", 0.5)], "exactly one variant must be the control"),
        ([Variant("A", 0.5, True), Variant("B", 0.5, True)], "exactly one variant must be the control"),
        ([Variant("A", 0.5, True), Variant("A", 0.5)], "unique; repeated: ['A']"),
        ([Variant("A", 0.5, True), Variant("B", 0.4)], "must sum to 1"),
        ([Variant("A", 50, True), Variant("B", 50)], "not percentages"),
        ([Variant("A", 1.0, True)], "at least one treatment"),
    ],
)
def test_invalid_splits_are_refused(variants: list[Variant], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_variants(variants)
    with pytest.raises(ConfigError):
        assign(["u"], "s", variants)


@pytest.mark.parametrize(("name", "weight"), [("", 0.5), ("  ", 0.5), ("B", 0.0), ("B", -0.1), ("B", float("nan"))])
def test_invalid_variant_is_refused(name: str, weight: float) -> None:
    with pytest.raises(ConfigError, match="variant"):
        Variant(name, weight)


@pytest.mark.parametrize(
    ("user_ids", "salt", "message"),
    [
        (["u1"], "", "salt is empty"),
        (["u1", None], "s", r"user_ids\[1\] is missing"),
        (["u1", "u2", ""], "s", r"user_ids\[2\] is an empty string"),
        (["u1", 7], "s", "must be strings"),
        (pa.array([1, 2]), "s", "must be strings"),
    ],
)
def test_bad_ids_or_salt_are_refused(user_ids: object, salt: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        assign(user_ids, salt, HALF)  # type: ignore[arg-type]
