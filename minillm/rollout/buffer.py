"""One round's rollout, served as shuffled minibatches for the PPO inner epochs."""

from __future__ import annotations

from dataclasses import fields

import torch

from minillm.errors import MinillmError
from minillm.rollout.sampler import Rollout


class RolloutBuffer:
    """Holds one round's rollout (one batch of prompts, sampled at once); ``minibatch_order`` and
    ``minibatch`` serve it for the PPO inner epochs. A round is cleared before the next one is added."""

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

    def minibatch_order(
        self, batch_size: int, epochs: int = 1, *, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """The row indices of every minibatch of ``epochs`` passes: each pass is a fresh permutation drawn
        from ``generator`` (reproducible from its seed) cut into batches of ``batch_size`` (the last of a
        pass may be smaller), so every row is used exactly once per pass."""
        if batch_size <= 0:
            raise MinillmError(f"batch_size must be > 0, got {batch_size}")
        n = len(self.rollout())
        order = []
        for _ in range(epochs):
            perm = torch.randperm(n, generator=generator)
            order.extend(perm[start : start + batch_size] for start in range(0, n, batch_size))
        return order

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
