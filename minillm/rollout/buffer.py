"""One round's rollout, served as shuffled minibatches for the PPO inner epochs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

import torch

from minillm.errors import MinillmError
from minillm.rollout.sampler import Rollout


class RolloutBuffer:
    """Holds one round's rollout (one batch of prompts, sampled at once); ``minibatches`` serves it for
    the PPO inner epochs. A round is cleared before the next one is added."""

    def __init__(self) -> None:
        self._rollout: Rollout | None = None

    def add(self, rollout: Rollout) -> None:
        if self._rollout is not None:
            raise MinillmError("the rollout buffer already holds a round: clear() it before adding the next")
        self._rollout = rollout

    def clear(self) -> None:
        self._rollout = None

    def __len__(self) -> int:
        return 0 if self._rollout is None else len(self._rollout)

    def rollout(self) -> Rollout:
        """The round's rollout."""
        if self._rollout is None:
            raise MinillmError("the rollout buffer is empty")
        return self._rollout

    def minibatches(
        self, batch_size: int, *, shuffle: bool = True, generator: torch.Generator | None = None
    ) -> Iterator[Rollout]:
        """One epoch: every row exactly once, in batches of ``batch_size`` (the last may be smaller).

        Each minibatch has the padding columns it does not need trimmed off. ``generator`` drives
        the shuffle, so epochs are reproducible given its seed.
        """
        if batch_size <= 0:
            raise MinillmError(f"batch_size must be > 0, got {batch_size}")
        n = len(self.rollout())
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            yield self.minibatch(order[start : start + batch_size])

    def minibatch(self, indices: torch.Tensor) -> Rollout:
        """The rows ``indices`` of the buffer, with the padding columns they do not need trimmed off."""
        return self.rollout().select(indices).trim_padding()

    def state_dict(self) -> dict:
        """Tensors only (plus the pad id), for checkpointing; empty buffer -> ``{"rollout": None}``."""
        if self._rollout is None:
            return {"rollout": None}
        return {"rollout": {f.name: getattr(self._rollout, f.name) for f in fields(Rollout)}}

    def load_state_dict(self, state: dict) -> None:
        self.clear()
        if state.get("rollout") is not None:
            self.add(Rollout(**state["rollout"]))
