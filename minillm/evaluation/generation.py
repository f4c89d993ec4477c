"""Evaluation-only changes to sampling: the ``no_repeat_ngram_size`` logits processor.

Plugged into ``minillm.rollout.sampler.generate(logits_processor=…)``; training never uses it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from minillm.errors import MinillmError


def no_repeat_ngram_processor(n: int):
    """A logits processor that forbids any n-gram from occurring twice in a response.

    At each step, for every earlier position where the last ``n − 1`` generated tokens occurred, the
    token that followed them there gets logit −inf. Only the response counts (unlike transformers'
    ``no_repeat_ngram_size``, the prompt is not searched: answers often quote it). A row whose every
    token would be banned is left unchanged rather than made impossible to sample.

    Returns ``fn(response_ids (B, t), logits (B, V)) -> logits (B, V)``.
    """
    if not isinstance(n, int) or n < 1:
        raise MinillmError(f"no_repeat_ngram_size={n!r}: must be a positive integer (0 = off)")

    def process(response_ids: Tensor, logits: Tensor) -> Tensor:
        t = response_ids.shape[1]
        if t < n:  # no complete earlier n-gram could repeat yet (t == n − 1 has no earlier one either)
            return logits
        grams = response_ids.unfold(1, n, 1)  # (B, t − n + 1, n): every complete n-gram so far
        tail = response_ids[:, t - n + 1 :]  # (B, n − 1) the prefix the next token would extend
        matches = (grams[:, :, : n - 1] == tail.unsqueeze(1)).all(-1)  # (B, K)
        banned = torch.zeros(logits.shape, dtype=torch.long, device=logits.device)
        banned.scatter_add_(1, grams[:, :, -1], matches.long())  # add, not set: duplicates must not overwrite
        banned = banned > 0
        banned &= ~banned.all(-1, keepdim=True)
        return logits.masked_fill(banned, float("-inf"))

    return process
