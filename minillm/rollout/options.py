"""What to sample: one frozen ``SamplingOptions`` that every decoder takes (``minillm.rollout.sampler``,
``minillm.rollout.generate``, the vLLM engine), built from a config node by :meth:`SamplingOptions.from_config`.

Training (the MiniLLM round, GKD/DistiLLM student samples), SeqKD data and evaluation build their options
there, each from its own node (``objective`` or ``eval``), so a key means the same thing to all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from minillm.errors import MinillmError


@dataclass(frozen=True)
class SamplingOptions:
    """How responses are sampled; checked on construction (a bad value is a ``MinillmError``)."""

    max_new_tokens: int  # most tokens generated per row (> 0)
    # id (or ids) that end a row; the EOS is kept and inside ``response_mask``. None: rows stop only at
    # max_new_tokens
    eos_token_id: int | tuple[int, ...] | None
    pad_token_id: int  # fills response positions after a row's EOS
    temperature: float = 1.0  # applied to each model's logits before mixing; 0 means greedy
    top_k: int = 0  # filter on the (mixed) distribution before sampling; 0: off
    top_p: float = 1.0  # nucleus cut on the (mixed) distribution before sampling; 1: off
    # α of p̃ = α·p + (1−α)·q: the teacher's weight (MiniLLM's teacher-mixed sampling); 0 samples the
    # student alone
    teacher_mix_alpha: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.eos_token_id, Sequence):  # a list from a tokenizer: frozen means a tuple
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        if self.max_new_tokens <= 0:
            raise MinillmError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise MinillmError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise MinillmError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise MinillmError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if not 0.0 <= self.teacher_mix_alpha <= 1.0:
            raise MinillmError(f"alpha must be in [0, 1], got {self.teacher_mix_alpha}")

    @classmethod
    def from_config(
        cls,
        node,
        *,
        eos_token_id: int | Sequence[int] | None,
        pad_token_id: int,
        max_new_tokens: int | None = None,
        teacher_mix_alpha: float = 0.0,
    ) -> SamplingOptions:
        """The options a config node sets: ``node.max_new_tokens`` (or ``max_new_tokens`` when given),
        ``temperature``, ``top_k`` and ``top_p`` (1.0, 0 and 1.0 when the node has no such key).

        ``node`` is ``objective`` (training's samples, SeqKD's teacher samples) or ``eval``; the token ids
        are the tokenizer's.
        """
        return cls(
            max_new_tokens=int(node["max_new_tokens"] if max_new_tokens is None else max_new_tokens),
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            temperature=node.get("temperature", 1.0),
            top_k=node.get("top_k", 0),
            top_p=node.get("top_p", 1.0),
            teacher_mix_alpha=teacher_mix_alpha,
        )
