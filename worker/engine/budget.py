"""The training budget: whole epochs, or an exact number of training inputs counted across epochs."""

from __future__ import annotations

import math
from dataclasses import dataclass


def steps_for(inputs: int, batch_size: int) -> int:
    """Optimizer steps for ``inputs`` samples, matching ``loader.batch_order`` (a trailing 1 is merged)."""
    full, rest = divmod(inputs, batch_size)
    return full + (rest > 0) - (rest == 1 and full > 0)


@dataclass(frozen=True)
class Budget:
    """``max_epochs`` passes over ``n_train`` samples, or, with ``max_inputs``, exactly that many inputs.

    ``max_inputs`` takes precedence over ``max_epochs``: the run lasts ``ceil(max_inputs / n_train)`` epochs and
    the last one is cut short (its last batch truncated) so that exactly ``max_inputs`` samples are seen.
    """

    n_train: int
    batch_size: int
    max_epochs: int
    max_inputs: int | None = None

    def __post_init__(self) -> None:
        if self.n_train < 1:
            raise ValueError(f"the training set is empty, got n_train={self.n_train}")

    @property
    def epochs(self) -> int:
        if self.max_inputs is None:
            return self.max_epochs
        return math.ceil(self.max_inputs / self.n_train)

    def inputs(self, epoch: int) -> int:
        """Training inputs of ``epoch`` (1-based)."""
        if self.max_inputs is None:
            return self.n_train
        return max(0, min(self.n_train, self.max_inputs - (epoch - 1) * self.n_train))

    @property
    def steps_per_epoch(self) -> int:
        return steps_for(self.n_train, self.batch_size)

    @property
    def total_steps(self) -> int:
        return sum(steps_for(self.inputs(e), self.batch_size) for e in range(1, self.epochs + 1))
