"""``trainer.precision=auto``: bf16 mixed precision where the device has bf16 and it measured faster.

Resolved once at the start of a run, before Lightning sees the value (``minillm.run.train``): on the
training device, the student's own forward + backward on a few random tokens is timed in fp32 and under
bf16 autocast, alternated; ``bf16-mixed`` is chosen only when the device supports bf16 and the bf16 pass
was faster by at least ``1 − AUTO_MARGIN``, else ``32-true``. The choice and both times are logged in one
line and written into the run's config (config.yaml, the checkpoint); nothing is cached across machines,
since the answer depends on the machine (on CPUs with AVX512-BF16 / AMX large models gain, tiny ones,
dominated by per-op overhead, lose). An explicit value (``32-true``, ``bf16-mixed``, ...) always wins,
and a resumed run keeps the precision its checkpoint trained with.

What stays exact under bf16: every loss, log-softmax, reward, importance weight and PPO ratio is computed
in float32 from the (bf16) logits (``minillm.objectives`` upcast), and under mixed precision the round
scores its "old" log-probs with the same teacher-forced pass as the updates (``RoundOptions.
rescore_old_logprobs``), so the first inner step's ratio is exactly 1.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import statistics
import time

import torch
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)

AUTO = "auto"
BF16, FP32 = "bf16-mixed", "32-true"
# bf16 must take at most 0.8 × the fp32 time: a near-tie on a noisy machine stays fp32 (the shipped student, a
# near-tie, gave medians of 0.90-1.39 × in six probes of one process on the shared machine; SmolLM2's pruned
# student 0.72 ×)
AUTO_MARGIN = 0.8
PROBE_SHAPE = (4, 64)  # random tokens per timed forward + backward
PROBE_REPEATS = 3  # timed pairs at least (after one untimed pair); the medians are compared
# and more pairs until each side has taken this long (a small model's 6 ms passes: one noisy pair moved the median
# of three across the margin, so identical commands chose differently), at most PROBE_MAX_PAIRS
PROBE_SECONDS = 0.5
PROBE_MAX_PAIRS = 50


def is_mixed(precision) -> bool:
    """Lightning's mixed-precision settings (``bf16-mixed``, ``16-mixed`` and their short forms)."""
    return str(precision) in ("bf16-mixed", "bf16", "16-mixed", "16")


def autocast(precision, device: str):
    """The autocast a mixed ``precision`` runs under on ``device`` (bf16 or fp16), else a null context:
    for what runs outside Lightning (the end-of-run evaluation)."""
    if not is_mixed(precision):
        return contextlib.nullcontext()
    return torch.autocast(
        device, dtype=torch.bfloat16 if str(precision).startswith("bf16") else torch.float16
    )


def device_type(cfg: DictConfig) -> str:
    """``cuda`` when the trainer runs on a CUDA GPU (``accelerator`` gpu / cuda, or auto with one), else cpu."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def bf16_supported(device: str) -> bool:
    """Whether ``device`` runs bf16 natively: a CUDA GPU that supports it, or a CPU with bf16 instructions
    (AVX512-BF16 / AMX, as oneDNN reports them)."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_update(model: torch.nn.Module, ids: torch.Tensor, device: str, bf16: bool) -> float:
    """Seconds of one forward + backward of ``model`` on ``ids`` (B, L), under bf16 autocast or in fp32."""
    context = torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)
    _sync(device)
    start = time.perf_counter()
    with context:
        logits = model(input_ids=ids).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    _sync(device)
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def measure(model: torch.nn.Module, device: str) -> tuple[float, float, int]:
    """(fp32 seconds, bf16 seconds, pairs timed): medians of alternated forward + backward passes of a copy of ``model`` on
    random tokens (its own generator and eval mode: the run's RNG is not touched): ``PROBE_REPEATS`` pairs after
    an untimed one, and more until each side has taken ``PROBE_SECONDS`` (``PROBE_MAX_PAIRS`` at most)."""
    probe = copy.deepcopy(model).to(device).eval()
    vocab = int(probe.get_input_embeddings().weight.shape[0])
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, PROBE_SHAPE, generator=gen).to(device)
    for bf16 in (False, True):  # the first pair warms up
        time_update(probe, ids, device, bf16)
    times: dict[bool, list[float]] = {False: [], True: []}
    while len(times[False]) < PROBE_REPEATS or (
        min(sum(times[False]), sum(times[True])) < PROBE_SECONDS and len(times[False]) < PROBE_MAX_PAIRS
    ):
        for bf16 in (False, True):
            times[bf16].append(time_update(probe, ids, device, bf16))
    del probe
    return statistics.median(times[False]), statistics.median(times[True]), len(times[False])


def resolve_precision(cfg: DictConfig, student: torch.nn.Module) -> str | None:
    """Replace ``trainer.precision=auto`` in ``cfg`` by ``bf16-mixed`` or ``32-true`` (see the module's
    docstring) and log the decision in one line; returns the chosen value, or None for an explicit one."""
    if str(cfg.trainer.get("precision")) != AUTO:
        return None
    device = device_type(cfg)
    if not bf16_supported(device):
        choice, why = FP32, f"this {device} has no native bf16"
    else:
        fp32_s, bf16_s, pairs = measure(student, device)
        faster = bf16_s <= AUTO_MARGIN * fp32_s
        choice = BF16 if faster else FP32
        why = (
            f"the student's forward + backward on {PROBE_SHAPE[0]}×{PROBE_SHAPE[1]} tokens took "
            f"{bf16_s * 1e3:.1f} ms under bf16 autocast, {fp32_s * 1e3:.1f} ms in fp32 (medians of "
            f"{pairs} alternated pairs; bf16 needs ≤ {AUTO_MARGIN:g}×)"
        )
    with open_dict(cfg):
        cfg.trainer.precision = choice
    log.info("trainer.precision=auto: %s on %s (%s)", choice, device, why)
    return choice
