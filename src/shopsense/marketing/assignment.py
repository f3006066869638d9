"""Deterministic variant assignment: a user's arm is a pure function of (campaign salt, user id).

Why hashing instead of a random draw stored per user: the arm can be recomputed anywhere (batch job,
API replica, next year's audit) with no lookup table, adding or removing other users never moves
anyone, and a new salt per campaign decorrelates campaigns so the same users are not always treated.

The hash is specified here, not borrowed from the runtime (Python's ``hash()`` is salted per process):
64-bit FNV-1a over the UTF-8 bytes of ``f"{salt}:{user_id}"``, then the MurmurHash3 ``fmix64``
finaliser so every output bit depends on every input byte. The top 53 bits give a uniform number in
[0, 1), and the arm is the first one whose cumulative weight exceeds it. Both steps run column-wise
over Arrow string buffers with numpy, so a million ids hash in well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import pyarrow as pa

from shopsense.errors import ConfigError

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1
_WEIGHT_TOLERANCE = 1e-9

UserIds: TypeAlias = Sequence[str] | pa.Array | pa.ChunkedArray
"""External user ids: any sequence of str, or an Arrow string column (read from the store without copying)."""


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment: its name, the share of users it gets, and whether it is the hold-out.

    Args:
        name: label stored with each assignment and shown in read-outs.
        weight: share of users in (0, 1]; the weights of one experiment sum to 1.
        is_control: the untreated hold-out every treatment is measured against.
    """

    name: str
    weight: float
    is_control: bool = False

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ConfigError("variant name is empty; give every arm a label such as 'control' or 'B'")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ConfigError(f"variant {self.name!r}: weight must be a number > 0, got {self.weight!r}")


def validate_variants(variants: Sequence[Variant]) -> None:
    """Refuse a split that cannot give a trustworthy read-out.

    Exactly one control is required: without a hold-out there is nothing to measure lift against,
    and with two the baseline is ambiguous. Weights must already sum to 1 (no silent normalising),
    because the same weights are later the expected ratios of the sample-ratio-mismatch check.

    Raises:
        ConfigError: on no variants, duplicate names, not exactly one control, or weights not summing to 1.
    """
    if len(variants) < 2:
        raise ConfigError(f"an experiment needs a control and at least one treatment, got {len(variants)} variant(s)")
    names = [v.name for v in variants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"variant names must be unique; repeated: {duplicates}")
    controls = [v.name for v in variants if v.is_control]
    if len(controls) != 1:
        raise ConfigError(
            f"exactly one variant must be the control (hold-out), got {len(controls)}: {controls}; "
            "set is_control=True on the untreated arm"
        )
    total = math.fsum(v.weight for v in variants)
    if abs(total - 1.0) > _WEIGHT_TOLERANCE:
        raise ConfigError(
            f"variant weights must sum to 1, got {total!r} ({ {v.name: v.weight for v in variants} });"
            " write shares such as 0.1 and 0.9, not percentages"
        )


def unit_hash(user_ids: UserIds, salt: str) -> np.ndarray:
    """Map each user id to a stable number in [0, 1) for this salt (see the module docstring for the hash).

    Raises:
        ConfigError: on an empty salt, or a missing, empty or non-string user id (its position is named).
    """
    if not salt:
        raise ConfigError("salt is empty; use a per-campaign string so campaigns do not share arms")
    ids = _as_strings(user_ids)
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64)[ids.offset : ids.offset + len(ids) + 1]
    data = np.frombuffer(ids.buffers()[2], dtype=np.uint8) if len(ids) else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    hashes = np.full(len(ids), _fnv1a(f"{salt}:".encode(), _FNV_OFFSET), dtype=np.uint64)
    prime = np.uint64(_FNV_PRIME)
    for position in range(int(lengths.max(initial=0))):
        active = lengths > position
        byte = data[np.where(active, starts + position, 0)].astype(np.uint64)
        hashes = np.where(active, (hashes ^ byte) * prime, hashes)
    return (_fmix64(hashes) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def assign(user_ids: UserIds, salt: str, variants: Sequence[Variant]) -> np.ndarray:
    """The variant name of each user, in input order.

    Args:
        user_ids: external user ids, kept as given (case and whitespace matter).
        salt: per-campaign string; changing it reshuffles everyone.
        variants: the arms; see ``validate_variants`` for the rules.

    Returns:
        A numpy string array, one variant name per user id.
    """
    validate_variants(variants)
    cumulative = np.cumsum([v.weight for v in variants])
    cumulative[-1] = 1.0  # the hash is < 1, so the last arm absorbs any rounding in the sum
    arm = np.searchsorted(cumulative, unit_hash(user_ids, salt), side="right")
    return np.array([v.name for v in variants])[arm]


def _as_strings(user_ids: UserIds) -> pa.LargeStringArray:
    if isinstance(user_ids, pa.ChunkedArray):
        user_ids = user_ids.combine_chunks()
    if isinstance(user_ids, pa.Array) and not (
        pa.types.is_string(user_ids.type) or pa.types.is_large_string(user_ids.type)
    ):
        raise ConfigError(f"user ids must be strings, got an Arrow array of {user_ids.type}")
    try:
        ids = pa.array(user_ids, type=pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ConfigError(f"user ids must be strings: {exc}") from exc
    if ids.null_count:
        first = int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
        raise ConfigError(f"user_ids[{first}] is missing; every user needs an id to be assigned")
    lengths = np.diff(np.frombuffer(ids.buffers()[1], dtype=np.int64)[ids.offset : ids.offset + len(ids) + 1])
    if (lengths == 0).any():
        raise ConfigError(f"user_ids[{int(np.flatnonzero(lengths == 0)[0])}] is an empty string")
    return ids


def _fnv1a(data: bytes, state: int) -> int:
    for byte in data:
        state = ((state ^ byte) * _FNV_PRIME) & _MASK64
    return state


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    mixed: np.ndarray = h ^ (h >> np.uint64(33))
    return mixed
