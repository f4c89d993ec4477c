"""L_PT, the pre-training term of MiniLLM's loss (L = L_MiniLLM + pt_coef · L_PT)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minillm.objectives.divergences import forward_kl


def pretrain_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    *,
    kd_ratio: float = 0.0,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_PT on a block of pre-training text: (1 − kd_ratio)·LM + kd_ratio·KL(p‖q).

    - ``student_logits``: (B, L, V) at the positions that predict ``targets`` (B, L) (already shifted:
      position t predicts ``targets[:, t]``); every position counts (the text is packed, no padding).
    - ``teacher_logits``: (B, L, V) at the same positions; needed only when ``kd_ratio`` > 0. The paper's
      L_PT is the plain LM loss (kd_ratio = 0); the authors' code mixes in forward KD to the teacher on
      the same text, 0.5 / 0.5.
    Returns the loss and its terms, detached, for logging: ``pt_lm_loss``, ``pt_kd_kl`` (the true
    forward KL, teacher entropy included; only with KD) and ``pt_loss``.
    """
    lm = F.cross_entropy(student_logits.reshape(-1, student_logits.shape[-1]).float(), targets.reshape(-1))
    logs = {"pt_lm_loss": lm.detach()}
    if kd_ratio <= 0:
        logs["pt_loss"] = lm.detach()
        return lm, logs
    kd = forward_kl(student_logits, teacher_logits, reduction="mean", chunk_size=chunk_size)
    pt = (1 - kd_ratio) * lm + kd_ratio * kd
    logs.update(pt_kd_kl=kd.detach(), pt_loss=pt.detach())
    return pt, logs
