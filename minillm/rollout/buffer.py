"""One round of rollouts, served as shuffled minibatches for the PPO inner epochs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

import torch
from torch import Tensor

from minillm.errors import MinillmError
from minillm.rollout.sampler import Rollout

_PROMPT_FIELDS = ("prompt_ids", "prompt_mask")


def concat_rollouts(rollouts: list[Rollout]) -> Rollout:
    """Stack rollouts row-wise, padding to common lengths.

    Prompts are left-padded (pad_token_id, mask 0) to the longest prompt; responses and their
    per-token tensors are right-padded (pad_token_id for ids, 0 for masks, log-probs and logits) to
    the longest response. Position ids come from the masks, so padding changes no log-prob.
    Optional fields (teacher_logprobs, teacher_logits) must be present in all rollouts or in none.
    """
    if not rollouts:
        raise MinillmError("concat_rollouts needs at least one rollout")
    if len(rollouts) == 1:
        return rollouts[0]
    pad_id = rollouts[0].pad_token_id
    prompt_len = max(r.prompt_ids.shape[1] for r in rollouts)
    response_len = max(r.response_ids.shape[1] for r in rollouts)
    out: dict[str, object] = {"pad_token_id": pad_id}
    for f in fields(Rollout):
        name = f.name
        if name == "pad_token_id":
            continue
        values = [getattr(r, name) for r in rollouts]
        present = [v is not None for v in values]
        if not all(present):
            if any(present):
                raise MinillmError(f"cannot concatenate rollouts where only some have {name}")
            out[name] = None
            continue
        if name == "teacher_logits" and len({v.shape[-1] for v in values}) > 1:
            raise MinillmError(f"cannot concatenate rollouts with different vocab sizes in {name}")
        fill = pad_id if name in ("prompt_ids", "response_ids") else 0
        if name in _PROMPT_FIELDS:
            out[name] = torch.cat([_pad_cols(v, prompt_len, fill, left=True) for v in values])
        else:
            out[name] = torch.cat([_pad_cols(v, response_len, fill, left=False) for v in values])
    return Rollout(**out)


def _pad_cols(x: Tensor, length: int, fill: int | float, *, left: bool) -> Tensor:
    """Pad dim 1 of x to ``length`` with ``fill``, on the left or the right."""
    missing = length - x.shape[1]
    if missing == 0:
        return x
    pad = torch.full((x.shape[0], missing, *x.shape[2:]), fill, dtype=x.dtype, device=x.device)
    return torch.cat([pad, x] if left else [x, pad], dim=1)


class RolloutBuffer:
    """Holds the rollouts of one round; ``minibatches`` serves them for the PPO inner epochs."""

    def __init__(self) -> None:
        self._rollouts: list[Rollout] = []
        self._merged: Rollout | None = None

    def add(self, rollout: Rollout) -> None:
        self._rollouts.append(rollout)
        self._merged = None

    def clear(self) -> None:
        self._rollouts = []
        self._merged = None

    def __len__(self) -> int:
        return sum(len(r) for r in self._rollouts)

    def rollout(self) -> Rollout:
        """Everything in the buffer as one padded Rollout."""
        if not self._rollouts:
            raise MinillmError("the rollout buffer is empty")
        if self._merged is None:
            self._merged = concat_rollouts(self._rollouts)
            self._rollouts = [self._merged]
        return self._merged

    def minibatches(
        self, batch_size: int, *, shuffle: bool = True, generator: torch.Generator | None = None
    ) -> Iterator[Rollout]:
        """One epoch: every row exactly once, in batches of ``batch_size`` (the last may be smaller).

        Each minibatch has the padding columns it does not need trimmed off. ``generator`` drives
        the shuffle, so epochs are reproducible given its seed.
        """
        if batch_size <= 0:
            raise MinillmError(f"batch_size must be > 0, got {batch_size}")
        merged = self.rollout()
        n = len(merged)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            yield self.minibatch(order[start : start + batch_size])

    def minibatch(self, indices: torch.Tensor) -> Rollout:
        """The rows ``indices`` of the buffer, with the padding columns they do not need trimmed off."""
        return self.rollout().select(indices).trim_padding()

    def state_dict(self) -> dict:
        """Tensors only (plus the pad id), for checkpointing; empty buffer -> ``{"rollout": None}``."""
        if not self._rollouts:
            return {"rollout": None}
        merged = self.rollout()
        return {"rollout": {f.name: getattr(merged, f.name) for f in fields(Rollout)}}

    def load_state_dict(self, state: dict) -> None:
        self.clear()
        if state.get("rollout") is not None:
            self.add(Rollout(**state["rollout"]))
