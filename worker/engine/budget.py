"""The training budget: whole epochs, or an exact number of training inputs or optimizer steps across epochs."""

from __future__ import annotations

import math
from dataclasses import dataclass


def steps_for(inputs: int, batch_size: int) -> int:
    """Optimizer steps for ``inputs`` samples, matching ``loader.batch_order`` (a trailing 1 is merged)."""
    full, rest = divmod(inputs, batch_size)
    return full + (rest > 0) - (rest == 1 and full > 0)


@dataclass(frozen=True)
class Budget:
    """``max_epochs`` passes over ``n_train`` samples, or exactly ``max_inputs`` inputs, or ``max_steps`` steps.

    ``max_inputs`` and ``max_steps`` take precedence over ``max_epochs``: the run lasts as many epochs as they
    need and the last one is cut short (``max_inputs``: its last batch truncated; ``max_steps``: whole batches
    of ``batch_size`` until the count is reached), so that exactly that many inputs or steps are trained.
    """

    n_train: int
    batch_size: int
    max_epochs: int
    max_inputs: int | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.n_train < 1:
            raise ValueError(f"the training set is empty, got n_train={self.n_train}")
        if self.max_inputs is not None and self.max_steps is not None:
            raise ValueError("give max_inputs or max_steps, not both")

    @property
    def epochs(self) -> int:
        if self.max_steps is not None:
            return math.ceil(self.max_steps / self.steps_per_epoch)
        if self.max_inputs is None:
            return self.max_epochs
        return math.ceil(self.max_inputs / self.n_train)

    def inputs(self, epoch: int) -> int:
        """Training inputs of ``epoch`` (1-based)."""
        if self.max_steps is not None:
            steps = max(0, min(self.steps_per_epoch, self.max_steps - (epoch - 1) * self.steps_per_epoch))
            # A short last epoch is whole batches; a full one is the whole set (its trailing 1 merged as usual).
            return self.n_train if steps == self.steps_per_epoch else steps * self.batch_size
        if self.max_inputs is None:
            return self.n_train
        return max(0, min(self.n_train, self.max_inputs - (epoch - 1) * self.n_train))

    @property
    def steps_per_epoch(self) -> int:
        return steps_for(self.n_train, self.batch_size)

    @property
    def total_steps(self) -> int:
        return sum(steps_for(self.inputs(e), self.batch_size) for e in range(1, self.epochs + 1))
