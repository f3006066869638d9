"""Early stopping for the PyTorch models: keep the best weights, stop on patience or a wall-clock deadline.

SASRec (validation NDCG, higher is better) and the DIN ranking head (validation log-loss,
lower is better) train the same way; this is the one place that decides when to stop.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only annotations: the models that train import torch themselves
    from torch import Tensor, nn


class EarlyStopping:
    """Call :meth:`update` after each epoch with its validation score; :meth:`restore` loads the best weights.

    A NaN score (no validation rows) always counts as better, so the last epoch's weights are kept.
    """

    def __init__(self, net: nn.Module, *, patience: int, max_minutes: float, higher_is_better: bool) -> None:
        self.patience = patience
        self.deadline = time.monotonic() + 60 * max_minutes
        self.sign = 1.0 if higher_is_better else -1.0
        self.best = -math.inf
        self.best_state = _copy_state(net)
        self.best_epoch = 0
        self.waited = 0

    def out_of_time(self) -> bool:
        """Past the wall-clock limit (checked between batches too)."""
        return time.monotonic() > self.deadline

    def update(self, net: nn.Module, score: float, epoch: int) -> bool:
        """Record an epoch; True when training should stop."""
        if math.isnan(score) or self.sign * score > self.best:
            self.best = self.sign * score if not math.isnan(score) else self.best
            self.best_state, self.best_epoch, self.waited = _copy_state(net), epoch, 0
        else:
            self.waited += 1
        return self.waited >= self.patience or self.out_of_time()

    def restore(self, net: nn.Module) -> None:
        net.load_state_dict(self.best_state)


def _copy_state(net: nn.Module) -> dict[str, Tensor]:
    return {name: value.detach().clone() for name, value in net.state_dict().items()}
