"""Train/test splits that never let the future leak into training.

Three protocols, all over an events table with ``user_id, item_id, type, timestamp``:

- **temporal**: one global cut time T at a quantile of event times; training sees every
  event before T, the test holds the target events (e.g. purchases) at or after T.
- **leave-last-k**: per user, the last k target events are the test; training sees the
  user's events strictly before the first of them (and everyone else's history).
- **random**: each (user, item) pair goes to the test with a seeded probability, all its
  events together; only for data without meaningful times (the MovieLens 1M copy here),
  matching the random-split protocol of published results.

Test users never seen in training are returned apart (``cold``) so they are reported as a
cold-start slice instead of being dropped. A validation split for tuning is the same
protocol applied again to the training part (:func:`validation_config`), so the test period
is never looked at while tuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import duckdb
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from shopsense.ingest.validate import lit


class Protocol(StrEnum):
    """How the held-out events are chosen."""

    TEMPORAL = "temporal"
    LEAVE_LAST = "leave_last"
    RANDOM = "random"


class SplitConfig(BaseModel):
    """A split protocol and what it predicts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Protocol = Protocol.TEMPORAL
    test_quantile: float = Field(0.8, gt=0, lt=1, description="temporal: T is this quantile of event times")
    last_k: int = Field(1, ge=1, description="leave_last: target events held out per user")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="random: share of (user, item) pairs held out")
    seed: int = Field(0, description="random: which pairs are held out")
    target_types: tuple[str, ...] = Field(("purchase",), min_length=1, description="event types to predict")


@dataclass(frozen=True)
class Split:
    """Training events, warm test events, cold-start test events, and how they were cut."""

    train: pa.Table
    test: pa.Table
    cold: pa.Table
    cutoff: datetime | None
    description: str


def split(events: pa.Table, config: SplitConfig) -> Split:
    """Cut ``events`` into train and test following ``config``."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("ev", events)
        targets = ", ".join(lit(t) for t in config.target_types)
        if config.protocol is Protocol.TEMPORAL:
            ((cutoff,),) = con.execute(f"SELECT quantile_disc(timestamp, {config.test_quantile}) FROM ev").fetchall()
            if cutoff is None:
                raise ValueError("no events to split")
            cut = f"TIMESTAMPTZ {lit(cutoff.isoformat())}"
            con.execute(f"CREATE TEMP VIEW train AS SELECT * FROM ev WHERE timestamp < {cut}")
            con.execute(f"CREATE TEMP VIEW held AS SELECT * FROM ev WHERE timestamp >= {cut} AND type IN ({targets})")
            how = f"temporal: train before {cutoff:%Y-%m-%d %H:%M} (q={config.test_quantile} of event times)"
        elif config.protocol is Protocol.RANDOM:
            cutoff = None
            pick = f"(hash(user_id, item_id, {int(config.seed)}) % 1000000) < {int(config.test_fraction * 1_000_000)}"
            con.execute(f"CREATE TEMP VIEW train AS SELECT * FROM ev WHERE NOT {pick}")
            con.execute(f"CREATE TEMP VIEW held AS SELECT * FROM ev WHERE {pick} AND type IN ({targets})")
            how = f"random: {config.test_fraction:.0%} of (user, item) pairs held out (seed {config.seed})"
        else:
            cutoff = None
            con.execute(
                f"""CREATE TEMP TABLE held AS SELECT * EXCLUDE (_rank) FROM (
                    SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY timestamp DESC, item_id) AS _rank
                    FROM ev WHERE type IN ({targets})) WHERE _rank <= {config.last_k}"""
            )
            con.execute(
                """CREATE TEMP VIEW train AS SELECT ev.* FROM ev
                LEFT JOIN (SELECT user_id, min(timestamp) AS first_held FROM held GROUP BY user_id) h USING (user_id)
                WHERE h.first_held IS NULL OR ev.timestamp < h.first_held"""
            )
            how = f"leave-last-{config.last_k}: each user's last {config.last_k} target events"
        con.execute("CREATE TEMP VIEW seen AS SELECT DISTINCT user_id FROM train")
        train = con.sql("SELECT * FROM train ORDER BY timestamp, user_id, item_id").to_arrow_table()
        test = con.sql("SELECT * FROM held SEMI JOIN seen USING (user_id) ORDER BY user_id, timestamp").to_arrow_table()
        cold = con.sql("SELECT * FROM held ANTI JOIN seen USING (user_id) ORDER BY user_id, timestamp").to_arrow_table()
    finally:
        con.close()
    description = (
        f"{how}; predict {', '.join(config.target_types)}; {train.num_rows:,} training events, "
        f"{test.num_rows:,} test events, {cold.num_rows:,} cold-start test events"
    )
    return Split(train, test, cold, cutoff, description)


def validation_config(config: SplitConfig) -> SplitConfig:
    """The protocol to cut a validation split from the training part with: the same, except that a random
    split draws other pairs (the next seed): the test's seed would pick exactly the pairs already held out,
    leaving nothing to validate on."""
    if config.protocol is Protocol.RANDOM:
        return config.model_copy(update={"seed": config.seed + 1})
    return config
