"""Uplift modelling: who buys *because* we contacted them, learned from a randomised campaign.

A response model ranks people who will convert anyway (sure things) next to people the contact
persuades; only the second group is worth a budget. Uplift models estimate the individual
treatment effect ``P(y=1 | x, treated) - P(y=1 | x, control)`` from an experiment where
treatment was assigned at random, so treated and control people are comparable.

Four meta-learners share one interface (:class:`UpliftModel`) and one LightGBM base learner:

- ``t_learner``: one classifier per arm, uplift is the difference of their probabilities.
- ``s_learner``: one classifier with the treatment flag as a feature, scored with it set to 1 and 0.
- ``class_transformation``: predict ``z = 1`` when (treated and converted) or (control and not);
  with arms weighted to equal size, ``uplift = 2 P(z=1 | x) - 1`` (Jaskowski and Jaroszewicz, 2012).
- ``x_learner``: a T-learner, then each arm's imputed individual effects regressed on features and
  blended by the treatment share (Kunzel et al., 2019); strongest when one arm is much smaller.

Evaluation wraps ``sklift.metrics`` (Qini and uplift AUC, uplift@k) and turns a score into a
decision: :func:`target` picks the most persuadable fraction and :func:`policy_value` estimates,
on held-out randomised data, the incremental conversions of contacting them versus contacting
the same number of people at random.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypeAlias

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field
from sklift.metrics import qini_auc_score, uplift_at_k, uplift_auc_score

from shopsense.errors import ConfigError
from shopsense.models.base import NotFitted

if TYPE_CHECKING:
    import pandas as pd

Approach = Literal["t_learner", "s_learner", "class_transformation", "x_learner"]
APPROACHES: tuple[Approach, ...] = ("t_learner", "s_learner", "class_transformation", "x_learner")

Features: TypeAlias = "npt.NDArray[Any] | pa.Table | pd.DataFrame"
"""A numeric 2-D array, or a table whose string columns are one-hot encoded."""


class UpliftConfig(BaseModel):
    """Which meta-learner, and the LightGBM base learner it is built from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    approach: Approach = Field("t_learner", description="meta-learner that turns base learners into uplift")
    n_estimators: int = Field(200, ge=1, description="boosting rounds per base learner")
    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(15, ge=2, description="leaves per tree; uplift signals are weak, keep trees small")
    min_child_samples: int = Field(100, ge=1, description="rows per leaf; large values smooth noisy effects")
    seed: int = Field(0, description="LightGBM seed: the same seed and data give the same uplift")
    n_jobs: int = Field(1, ge=1)


class UpliftModel:
    """Estimates each person's uplift from features, a 0/1 treatment flag and a 0/1 outcome.

    Example:
        ``UpliftModel(UpliftConfig(approach="x_learner")).fit(x, t, y).predict_uplift(x_new)``
    """

    def __init__(self, config: UpliftConfig | None = None) -> None:
        self.config = config or UpliftConfig()

    def fit(self, x: Features, t: npt.ArrayLike, y: npt.ArrayLike) -> Self:
        """Learn uplift from one randomised experiment.

        Args:
            x: features, one row per person (array, or pyarrow/pandas table).
            t: 1 = contacted (treatment), 0 = held out (control).
            y: 1 = converted, 0 = did not.

        Returns:
            self, fitted.
        """
        encoder = _Encoder.fit(x)
        values = encoder.transform(x)
        treated, outcome = _experiment(t, y, len(values))
        _require_both_outcomes(treated, outcome)
        learner = _LEARNERS[self.config.approach](self.config)
        learner.fit(values, treated, outcome)
        self.encoder_, self.learner_ = encoder, learner  # only now, so a failed refit leaves the old model whole
        return self

    def predict_uplift(self, x: Features) -> npt.NDArray[np.float64]:
        """Estimated conversion-probability gain from contacting each row's person (may be negative)."""
        if not hasattr(self, "learner_"):
            raise NotFitted("UpliftModel is not fitted: call fit() before predict_uplift()")
        return self.learner_.uplift(self.encoder_.transform(x))

    @property
    def feature_names_(self) -> list[str]:
        """Encoded column names (``column=value`` for one-hot columns), in model order."""
        return self.encoder_.names


@dataclass(frozen=True)
class PolicyValue:
    """What contacting the top ``fraction`` by uplift is worth, measured on randomised held-out rows."""

    fraction: float
    contacted: int
    uplift: float
    """Treated minus control conversion rate among the contacted: the policy's per-contact effect."""
    uplift_se: float
    """Standard error of ``uplift`` (difference of two binomial proportions)."""
    random_uplift: float
    """Treated minus control conversion rate over all rows: what random contacts earn on average."""

    @property
    def incremental(self) -> float:
        """Extra conversions from contacting the chosen people."""
        return self.uplift * self.contacted

    @property
    def random_incremental(self) -> float:
        """Extra conversions from contacting as many people chosen at random."""
        return self.random_uplift * self.contacted


def target(uplift: npt.ArrayLike, fraction: float = 0.3) -> npt.NDArray[np.bool_]:
    """Mask of the ``fraction`` most persuadable rows: who to contact when the budget covers only that many.

    The count is ``int(n * fraction)`` (as in ``sklift.metrics.uplift_at_k``); ties keep row order.
    """
    scores = _scores(uplift)
    count = _count(len(scores), fraction)
    mask = np.zeros(len(scores), dtype=bool)
    mask[np.argsort(-scores, kind="stable")[:count]] = True
    return mask


def uplift_at_fraction(
    y: npt.ArrayLike,
    t: npt.ArrayLike,
    uplift: npt.ArrayLike,
    fraction: float = 0.3,
    strategy: Literal["by_group", "overall"] = "by_group",
) -> float:
    """Observed treated minus control conversion rate among the top ``fraction`` by predicted uplift.

    ``by_group`` takes the top fraction of each arm separately (robust when arms differ in size);
    ``overall`` takes the top fraction of everyone, which is what :func:`target` would contact.
    """
    scores = _scores(uplift)
    treated, outcome = _experiment(t, y, len(scores))
    _count(len(scores), fraction)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # sklift calls a deprecated sklearn helper
        return float(uplift_at_k(outcome, scores, treated, strategy=strategy, k=fraction))


def evaluate_uplift(
    y: npt.ArrayLike, t: npt.ArrayLike, uplift: npt.ArrayLike, fraction: float = 0.3
) -> dict[str, float]:
    """Ranking quality of uplift scores on held-out randomised rows.

    Returns:
        ``qini_auc`` and ``uplift_auc`` (sklift's normalised areas; 0 = random ranking),
        ``uplift_at_k`` (by group) and ``uplift_at_k_overall`` at ``fraction``, and
        ``random_uplift``, the average effect that random targeting achieves.
    """
    scores = _scores(uplift)
    treated, outcome = _experiment(t, y, len(scores))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        qini = float(qini_auc_score(outcome, scores, treated))
        area = float(uplift_auc_score(outcome, scores, treated))
    return {
        "qini_auc": qini,
        "uplift_auc": area,
        "uplift_at_k": uplift_at_fraction(outcome, treated, scores, fraction, "by_group"),
        "uplift_at_k_overall": uplift_at_fraction(outcome, treated, scores, fraction, "overall"),
        "random_uplift": _effect(outcome, treated)[0],
    }


def policy_value(y: npt.ArrayLike, t: npt.ArrayLike, uplift: npt.ArrayLike, fraction: float = 0.3) -> PolicyValue:
    """Incremental conversions of contacting :func:`target`'s choice, versus random contacts of the same size.

    Valid only on rows the model did not train on, from an experiment where treatment was random:
    then the contacted rows' treated and control members differ only by the contact.
    """
    scores = _scores(uplift)
    treated, outcome = _experiment(t, y, len(scores))
    chosen = target(scores, fraction)
    if np.unique(treated[chosen]).size < 2:
        raise ConfigError(
            f"the top {fraction:.0%} by uplift ({chosen.sum()} rows) hold only one arm: "
            "measure on more held-out rows or a larger fraction"
        )
    effect, se = _effect(outcome[chosen], treated[chosen])
    return PolicyValue(
        fraction=fraction,
        contacted=int(chosen.sum()),
        uplift=effect,
        uplift_se=se,
        random_uplift=_effect(outcome, treated)[0],
    )


# --- meta-learners -------------------------------------------------------------------------------


class _MetaLearner(Protocol):
    def fit(self, x: npt.NDArray[np.float64], t: npt.NDArray[np.int8], y: npt.NDArray[np.int8]) -> None: ...

    def uplift(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]: ...


def _lgbm_params(config: UpliftConfig) -> dict[str, Any]:
    return {
        "n_estimators": config.n_estimators,
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_child_samples": config.min_child_samples,
        "random_state": config.seed,
        "n_jobs": config.n_jobs,
        "deterministic": True,
        "force_row_wise": True,
        "verbose": -1,
    }


def _classifier(config: UpliftConfig) -> lgb.LGBMClassifier:
    return lgb.LGBMClassifier(**_lgbm_params(config))


def _proba(model: lgb.LGBMClassifier, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(model.predict_proba(x), dtype=np.float64)[:, 1]


class _TLearner:
    def __init__(self, config: UpliftConfig) -> None:
        self.treated = _classifier(config)
        self.control = _classifier(config)

    def fit(self, x: npt.NDArray[np.float64], t: npt.NDArray[np.int8], y: npt.NDArray[np.int8]) -> None:
        self.treated.fit(x[t == 1], y[t == 1])
        self.control.fit(x[t == 0], y[t == 0])

    def uplift(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return _proba(self.treated, x) - _proba(self.control, x)


class _SLearner:
    def __init__(self, config: UpliftConfig) -> None:
        self.model = _classifier(config)

    def fit(self, x: npt.NDArray[np.float64], t: npt.NDArray[np.int8], y: npt.NDArray[np.int8]) -> None:
        self.model.fit(np.column_stack([x, t]), y)

    def uplift(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        ones, zeros = np.ones(len(x)), np.zeros(len(x))
        return _proba(self.model, np.column_stack([x, ones])) - _proba(self.model, np.column_stack([x, zeros]))


class _ClassTransformation:
    def __init__(self, config: UpliftConfig) -> None:
        self.model = _classifier(config)

    def fit(self, x: npt.NDArray[np.float64], t: npt.NDArray[np.int8], y: npt.NDArray[np.int8]) -> None:
        # The identity uplift = 2 P(z=1) - 1 needs P(t=1) = 1/2; weighting each arm to half the total makes it so.
        share = t.mean()
        weight = np.where(t == 1, 0.5 / share, 0.5 / (1 - share))
        self.model.fit(x, (y == t).astype(np.int8), sample_weight=weight)

    def uplift(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return 2 * _proba(self.model, x) - 1


class _XLearner:
    def __init__(self, config: UpliftConfig) -> None:
        self.outcomes = _TLearner(config)
        self.effect_treated = lgb.LGBMRegressor(**_lgbm_params(config))
        self.effect_control = lgb.LGBMRegressor(**_lgbm_params(config))

    def fit(self, x: npt.NDArray[np.float64], t: npt.NDArray[np.int8], y: npt.NDArray[np.int8]) -> None:
        self.outcomes.fit(x, t, y)
        on, off = t == 1, t == 0
        # Imputed individual effects: each arm's observed outcome against the other arm's model.
        self.effect_treated.fit(x[on], y[on] - _proba(self.outcomes.control, x[on]))
        self.effect_control.fit(x[off], _proba(self.outcomes.treated, x[off]) - y[off])
        # Randomised assignment: the propensity is the same for everyone, the treated share.
        self.share = float(t.mean())

    def uplift(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        tau_treated = np.asarray(self.effect_treated.predict(x), dtype=np.float64)
        tau_control = np.asarray(self.effect_control.predict(x), dtype=np.float64)
        # Trust more the effect learned from the larger arm (Kunzel et al.: g(x) = propensity).
        return self.share * tau_control + (1 - self.share) * tau_treated


_LEARNERS: dict[Approach, Callable[[UpliftConfig], _MetaLearner]] = {
    "t_learner": _TLearner,
    "s_learner": _SLearner,
    "class_transformation": _ClassTransformation,
    "x_learner": _XLearner,
}


# --- inputs --------------------------------------------------------------------------------------


class _Encoder:
    """Features to a float matrix: numbers as they are (null -> NaN), strings one-hot on the fitted categories.

    Categories are sorted, so the encoding depends only on the training values, never on row order;
    a category unseen in training encodes as all zeros.
    """

    def __init__(self, columns: list[str] | None, categories: dict[str, pa.Array], width: int) -> None:
        self.columns = columns
        self.categories = categories
        self.width = width
        self.names = [f"x{i}" for i in range(width)] if columns is None else []
        for column in columns or []:
            values = categories[column].to_pylist() if column in categories else None
            self.names += [column] if values is None else [f"{column}={value}" for value in values]

    @classmethod
    def fit(cls, x: Features) -> _Encoder:
        if isinstance(x, np.ndarray):
            return cls(None, {}, _matrix(x).shape[1])
        table = _table(x)
        if table.num_columns == 0:
            raise ConfigError("features: the table has no columns")
        categories = {
            name: pc.unique(column.drop_null()).sort()
            for name, column in zip(table.column_names, table.columns, strict=True)
            if _is_text(name, column.type)
        }
        return cls(table.column_names, categories, table.num_columns)

    def transform(self, x: Features) -> npt.NDArray[np.float64]:
        if self.columns is None:
            values = _matrix(x) if isinstance(x, np.ndarray) else None
            if values is None or values.shape[1] != self.width:
                got = values.shape[1] if values is not None else type(x).__name__
                raise ConfigError(f"features: fitted on a {self.width}-column array, got {got}")
            return values
        table = _table(x)
        missing = [name for name in self.columns if name not in table.column_names]
        if missing:
            raise ConfigError(f"features: columns {missing} were present at fit time but are missing")
        return np.column_stack([self._encode(name, table.column(name)) for name in self.columns])

    def _encode(self, name: str, column: pa.ChunkedArray) -> npt.NDArray[np.float64]:
        if name not in self.categories:
            if _is_text(name, column.type):
                raise ConfigError(f"features column {name!r}: numeric at fit time, text now")
            return np.asarray(column.cast(pa.float64()).to_numpy(), dtype=np.float64)
        codes = pc.index_in(column.cast(pa.string()), value_set=self.categories[name]).fill_null(-1)
        index = np.asarray(codes.to_numpy(), dtype=np.int64)
        onehot: npt.NDArray[np.bool_] = index[:, None] == np.arange(len(self.categories[name]))[None, :]
        return onehot.astype(np.float64)


def _is_text(name: str, kind: pa.DataType) -> bool:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        return True
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return False
    raise ConfigError(f"features column {name!r} has type {kind}: use numbers, booleans or strings")


def _table(x: Features) -> pa.Table:
    if isinstance(x, pa.Table):
        return x
    try:  # a pandas index is row labels, not a feature
        return pa.Table.from_pandas(x, preserve_index=False)
    except (AttributeError, TypeError, ValueError, pa.ArrowException) as error:
        raise ConfigError(f"features: expected a 2-D array or a table, got {type(x).__name__} ({error})") from error


def _matrix(x: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    if x.ndim != 2 or x.shape[1] == 0:
        raise ConfigError(f"features: expected a 2-D array with at least one column, got shape {x.shape}")
    try:
        values: npt.NDArray[np.float64] = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"features: array of {x.dtype} is not numeric; pass a table to one-hot text") from error
    return values


def _flags(name: str, values: npt.ArrayLike, n: int) -> npt.NDArray[np.int8]:
    array = np.asarray(values)
    if array.shape != (n,):
        raise ConfigError(f"{name}: expected {n} values (one per feature row), got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ConfigError(f"{name}: expected 0/1 numbers, got values of type {array.dtype}")
    bad = np.flatnonzero((array != 0) & (array != 1))
    if bad.size:
        raise ConfigError(f"{name}: values must be 0 or 1; row {bad[0]} is {array[bad[0]]!r}")
    return array.astype(np.int8)


def _experiment(t: npt.ArrayLike, y: npt.ArrayLike, n: int) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int8]]:
    treated, outcome = _flags("treatment", t, n), _flags("outcome", y, n)
    arms = np.unique(treated).tolist()
    if len(arms) < 2:
        raise ConfigError(f"treatment: only arm(s) {arms} present; uplift needs treated (1) and control (0) rows")
    return treated, outcome


def _require_both_outcomes(t: npt.NDArray[np.int8], y: npt.NDArray[np.int8]) -> None:
    for arm, label in ((1, "treatment"), (0, "control")):
        if np.unique(y[t == arm]).size < 2:
            raise ConfigError(f"outcome: the {label} group has only outcome={y[t == arm][0]}; cannot learn uplift")


def _scores(uplift: npt.ArrayLike) -> npt.NDArray[np.float64]:
    scores = np.asarray(uplift, dtype=np.float64)
    if scores.ndim != 1 or not np.isfinite(scores).all():
        raise ConfigError(f"uplift: expected a 1-D array of finite scores, got shape {scores.shape}")
    return scores


def _count(n: int, fraction: float) -> int:
    count = int(n * fraction)
    if not 0 < fraction <= 1 or count == 0:
        raise ConfigError(f"fraction: got {fraction} of {n} rows; it must be in (0, 1] and select at least one row")
    return count


def _effect(y: npt.NDArray[np.int8], t: npt.NDArray[np.int8]) -> tuple[float, float]:
    treated, control = y[t == 1], y[t == 0]
    p1, p0 = treated.mean(), control.mean()
    se = np.sqrt(p1 * (1 - p1) / len(treated) + p0 * (1 - p0) / len(control))
    return float(p1 - p0), float(se)
