"""Teacher-mixed sampling: student and teacher decode in lockstep, each with its own KV cache.

Each token is drawn from the mixture p̃ = α·p + (1−α)·q (MiniLLM's teacher-mixed sampling, Sec. 2.2),
mixed at the probability level after the temperature is applied to each model's logits. While
sampling we record, per sampled token:

- ``student_logprobs``: log q(y_t | ·) under the student's own distribution (temperature 1, no top-k /
  top-p) — the "old" log-probs of the PPO ratio;
- ``teacher_logprobs``: log p(y_t | ·), also at temperature 1 — the rewards r_t = log p − log q come
  from these, so no second teacher pass is needed;
- ``mix_logprobs``: log p̃(y_t | ·) under the distribution actually sampled from (temperature, top-k
  and top-p included; 0 for greedy decoding, a point mass) — the denominator of the importance
  weight w_t = q(y_t) / p̃(y_t).

Prompts are left-padded; position ids are ``cumsum(mask) − 1`` clamped at 0, and the attention mask
grows by one column per step (0 for the pad tokens fed after a row's EOS). ``Rollout.full_input``
rebuilds exactly these inputs for one teacher-forced pass over prompt + response.

Transformers 5.x: the KV cache is passed as ``cache=`` (``past_key_values`` is a deprecated alias) and
returned as ``output.cache``, a ``DynamicCache`` updated in place; there is no ``cache_position``
argument, positions come from ``position_ids``.

The loop runs under ``torch.no_grad`` rather than ``torch.inference_mode``: the recorded tensors are
later used as constants next to tensors that require grad, which inference tensors forbid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from minillm.errors import MinillmError
from minillm.rollout import static_decode, vllm_engine
from minillm.rollout.options import SamplingOptions

# On an accelerator the "all rows finished?" test is a host sync that stalls the launch queue, so it
# runs only every few steps there; the extra steps are trimmed away at the end.
_FINISH_CHECK_EVERY_ACCEL = 4


def _sharded(model: nn.Module | None) -> bool:
    """True when ``model`` has parameters sharded over processes (FSDP2): every forward is then a
    collective, and all ranks must run the same number of decoding steps."""
    if model is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return False
    from minillm.models.sharding import is_sharded

    return is_sharded(model)


def _all_ranks(done: bool, device: torch.device) -> bool:
    """``done`` on every rank (one all-reduce): a rank whose rows all finished keeps stepping, on padding,
    until the others are done too."""
    flag = torch.tensor([1 if done else 0], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item())


# (response ids so far (B, t), logits (B, V)) -> logits (B, V); see `generate`.
LogitsProcessor = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Rollout:
    """A batch of sampled responses with the per-token log-probs recorded while sampling.

    Shapes: B rows, P prompt columns (left-padded), T response columns (right-padded), V vocabulary.
    All log-probs are of the sampled token and are 0 where ``response_mask`` is 0; so are
    ``teacher_logits`` there. ``mix_logprobs`` is 0 for greedy decoding (a point mass).
    """

    prompt_ids: Tensor  # (B, P) left-padded
    prompt_mask: Tensor  # (B, P) 1 = real token
    response_ids: Tensor  # (B, T) pad_token_id after EOS
    response_mask: Tensor  # (B, T) 1 for generated tokens up to and including EOS
    student_logprobs: Tensor  # (B, T) log q(y_t | ·), temperature 1
    teacher_logprobs: Tensor | None  # (B, T) log p(y_t | ·), temperature 1
    mix_logprobs: Tensor  # (B, T) log p̃(y_t | ·) of the distribution sampled from
    teacher_logits: Tensor | None = None  # (B, T, V) raw teacher logits, if kept
    pad_token_id: int = 0  # fills padding when rollouts are concatenated

    def full_input(self) -> tuple[Tensor, Tensor, Tensor]:
        """(input_ids, attention_mask, position_ids), each (B, P + T), for one teacher-forced pass.

        Logits at positions P−1 .. P+T−2 predict the response tokens; the positions match those used
        while sampling, so that pass reproduces the recorded log-probs.
        """
        input_ids = torch.cat([self.prompt_ids, self.response_ids], dim=1)
        attention_mask = torch.cat([self.prompt_mask, self.response_mask.to(self.prompt_mask.dtype)], dim=1)
        return input_ids, attention_mask, position_ids_from_mask(attention_mask)

    def to(self, device: torch.device | str) -> Rollout:
        return self._map(lambda t: t.to(device))

    def select(self, idx: Tensor | Sequence[int] | slice) -> Rollout:
        """The rows ``idx`` (an index tensor, list of ints, or slice), e.g. for a minibatch."""
        if not isinstance(idx, slice | Tensor):
            idx = torch.as_tensor(idx, dtype=torch.long)
        if isinstance(idx, Tensor):
            idx = idx.to(self.prompt_ids.device)
        return self._map(lambda t: t[idx])

    def trim_padding(self) -> Rollout:
        """Drop prompt columns that are padding in every row and response columns after the longest row."""
        keep_from = int((self.prompt_mask.sum(0) > 0).long().argmax()) if len(self) else 0
        length = int(self.response_mask.sum(1).max()) if len(self) else 0
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("prompt_"):
                value = value[:, keep_from:]
            elif isinstance(value, Tensor):
                value = value[:, :length]
            out[f.name] = value
        return Rollout(**out)

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def _map(self, fn) -> Rollout:
        return Rollout(
            **{f.name: fn(v) if isinstance(v := getattr(self, f.name), Tensor) else v for f in fields(self)}
        )


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Position ids of a (left-)padded batch: ``cumsum(mask) − 1`` clamped at 0. (B, L) -> (B, L) long."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def response_logits(model, rollout: Rollout) -> Tensor:
    """(B, T, V) logits that predict the response tokens, from one teacher-forced pass."""
    input_ids, attention_mask, position_ids = rollout.full_input()
    t = rollout.response_ids.shape[1]
    # Only the last T+1 positions are needed: no output-layer work for the prompt.
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=t + 1
    ).logits
    return logits[:, :t]


def sampled_logprobs(logits: Tensor, token_ids: Tensor) -> Tensor:
    """(B, T) log-probs (float32 or wider) of ``token_ids`` under (B, T, V) ``logits``."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def score_with_teacher(teacher: nn.Module, rollout: Rollout, *, keep_teacher_logits: bool) -> Rollout:
    """Fill in the teacher's log-probs (and logits) of a finished rollout from one teacher-forced pass."""
    t_logits = response_logits(teacher, rollout)
    mask = rollout.response_mask.to(t_logits.dtype)
    teacher_logprobs = sampled_logprobs(t_logits, rollout.response_ids) * rollout.response_mask
    return dataclasses.replace(
        rollout,
        teacher_logprobs=teacher_logprobs,
        teacher_logits=t_logits * mask.unsqueeze(-1) if keep_teacher_logits else None,
    )


@torch.no_grad()
def sample_rollouts(
    student: nn.Module,
    teacher: nn.Module | None,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    sampling: SamplingOptions,
    *,
    generator: torch.Generator | None = None,
    keep_teacher_logits: bool = False,
    progress: bool = False,
    teacher_after_decoding: bool = True,
) -> Rollout:
    """Sample responses from p̃ = α·p + (1−α)·q, student and teacher decoding in lockstep.

    Args:
        student, teacher: Hugging Face causal LMs with the same vocabulary. ``teacher`` may be None
            only when ``sampling.teacher_mix_alpha == 0``; if given with α = 0 it is still run so that
            its log-probs (the rewards) are recorded, but it never affects what is sampled.
        prompt_ids, prompt_mask: (B, P) left-padded prompts; every row needs at least one real token.
        sampling: what to sample (:class:`~minillm.rollout.options.SamplingOptions`): the number of new
            tokens, α (``teacher_mix_alpha``), the EOS and pad ids, the temperature (applied to each
            model's logits before mixing; 0 means greedy, the argmax of p̃) and the top-k / top-p filters
            applied to the mixture before sampling.
        generator: the only source of randomness, so a seeded generator reproduces a rollout.
        keep_teacher_logits: also return the teacher's raw logits (B, T, V), in the teacher's dtype, for
            the single-step term (B·T·V values: 64 × 256 × 50k fp32 is 3.3 GB).
        progress: show a tqdm bar over decode steps.
        teacher_after_decoding: with α = 0, score the finished responses with one teacher pass
            instead of decoding the teacher in lockstep (False: lockstep, for benchmarks).

    Both models and the prompts must be on one device. Finished rows keep being fed pad tokens
    (masked out) until every row is done: no per-row Python work, no cache reshuffling.

    Returns:
        A Rollout with T ≤ max_new_tokens (trimmed to the longest row). Log-probs of each sampled token
        are at temperature 1 for ``student_logprobs`` / ``teacher_logprobs`` (the models' own
        distributions) and under the sampled-from distribution for ``mix_logprobs``.
    """
    alpha = sampling.teacher_mix_alpha
    if teacher is None and alpha > 0:
        raise MinillmError(f"alpha = {alpha} > 0 needs a teacher, got teacher=None")
    if keep_teacher_logits and teacher is None:
        raise MinillmError("keep_teacher_logits=True needs a teacher, got teacher=None")
    # sampler=vllm at α = 0: the engine picks the tokens; the log-probs come from the trainer's own passes
    engine = vllm_engine.current() if alpha == 0.0 else None
    if engine is not None:
        rollout = engine.generate(student, prompt_ids, prompt_mask, sampling, generator=generator)
        if teacher is None:
            return rollout
        return score_with_teacher(teacher, rollout, keep_teacher_logits=keep_teacher_logits)
    # At α = 0 the teacher never affects what is sampled: decode with the student alone, then score the
    # finished responses with ONE teacher pass (same log-probs, far cheaper than decoding in lockstep).
    score_after = alpha == 0.0 and teacher is not None and teacher_after_decoding
    rollout = _decode(
        student,
        None if score_after else teacher,
        prompt_ids,
        prompt_mask,
        sampling,
        generator=generator,
        keep_teacher_logits=keep_teacher_logits and not score_after,
        progress=progress,
    )
    if score_after:
        return score_with_teacher(teacher, rollout, keep_teacher_logits=keep_teacher_logits)
    return rollout


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    sampling: SamplingOptions,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
    logits_processor: LogitsProcessor | None = None,
) -> Rollout:
    """Sample from one model (evaluation, SeqKD data); temperature 0 is greedy.

    Same conventions as :func:`sample_rollouts` with no teacher: ``teacher_logprobs`` is None,
    ``student_logprobs`` holds the model's own log-probs at temperature 1. ``sampling.teacher_mix_alpha``
    must be 0 (there is no teacher to mix in).

    ``logits_processor(response_ids, logits) -> logits`` (optional) reshapes each step's logits before
    sampling: ``response_ids`` (B, t) are the tokens generated so far, ``logits`` (B, V). It changes what
    is sampled (and ``mix_logprobs``), never the recorded ``student_logprobs``. Evaluation uses it for
    ``no_repeat_ngram_size`` (``minillm.evaluation.generation``).

    With ``sampler=vllm`` (``minillm.rollout.vllm_engine``) the engine picks the tokens and one pass of
    ``model`` records the log-probs; a ``logits_processor`` always runs here.
    """
    if sampling.teacher_mix_alpha != 0.0:
        raise MinillmError(
            f"generate samples one model: teacher_mix_alpha must be 0, got {sampling.teacher_mix_alpha} "
            "(sample_rollouts mixes in a teacher)"
        )
    engine = vllm_engine.current() if logits_processor is None else None
    if engine is not None:
        return engine.generate(model, prompt_ids, prompt_mask, sampling, generator=generator)
    return _decode(
        model,
        None,
        prompt_ids,
        prompt_mask,
        sampling,
        generator=generator,
        keep_teacher_logits=False,
        progress=progress,
        logits_processor=logits_processor,
    )


def _decode(
    student: nn.Module,
    teacher: nn.Module | None,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    sampling: SamplingOptions,
    *,
    generator: torch.Generator | None,
    keep_teacher_logits: bool,
    progress: bool,
    logits_processor: LogitsProcessor | None = None,
) -> Rollout:
    check_prompts(prompt_ids, prompt_mask)
    models = [student] if teacher is None else [student, teacher]
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        return _decode_loop(
            student,
            teacher,
            prompt_ids,
            prompt_mask,
            sampling,
            generator=generator,
            keep_teacher_logits=keep_teacher_logits,
            progress=progress,
            logits_processor=logits_processor,
        )
    finally:
        for m, mode in zip(models, was_training, strict=True):
            m.train(mode)


def _decode_loop(
    student: nn.Module,
    teacher: nn.Module | None,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    sampling: SamplingOptions,
    *,
    generator: torch.Generator | None,
    keep_teacher_logits: bool,
    progress: bool,
    logits_processor: LogitsProcessor | None = None,
) -> Rollout:
    max_new_tokens, pad_token_id = sampling.max_new_tokens, sampling.pad_token_id
    device = prompt_ids.device
    batch, prompt_len = prompt_ids.shape
    eos_ids = _eos_tensor(sampling.eos_token_id, device)

    # Attention mask for prompt + all possible new tokens, filled in column by column.
    attention_mask = torch.zeros(batch, prompt_len + max_new_tokens, dtype=prompt_mask.dtype, device=device)
    attention_mask[:, :prompt_len] = prompt_mask
    positions = position_ids_from_mask(prompt_mask)
    n_real = prompt_mask.long().sum(-1)  # real tokens seen so far per row: the next token's position

    response_ids = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    response_mask = torch.zeros(batch, max_new_tokens, dtype=torch.long, device=device)
    student_lp = torch.zeros(batch, max_new_tokens, dtype=torch.float32, device=device)
    teacher_lp = torch.zeros_like(student_lp) if teacher is not None else None
    mix_lp = torch.zeros_like(student_lp)
    teacher_logits_steps: list[Tensor] = []
    finished = torch.zeros(batch, dtype=torch.bool, device=device)

    check_every = 1 if device.type == "cpu" else _FINISH_CHECK_EVERY_ACCEL
    lockstep = _sharded(student) or _sharded(teacher)  # FSDP: stop when every rank's rows are finished
    # sampler.decode=static|compiled: preallocated caches (minillm.rollout.static_decode); eager: None
    caches: list = [
        None
        if m is None or lockstep
        else static_decode.slot(_unwrap(m), batch, prompt_len, max_new_tokens, device)
        for m in (student, teacher)
    ]
    if (
        not lockstep
    ):  # eager steps under autocast: the copy with low-precision linear weights (the same numbers)
        student, teacher = (
            _low_precision_decoder(m) if m is not None and cache is None else m
            for m, cache in zip((student, teacher), caches, strict=True)
        )
    input_ids, step_positions = prompt_ids, positions
    steps = 0
    bar = tqdm(total=max_new_tokens, desc="rollout", disable=not progress, leave=False)
    try:
        for t in range(max_new_tokens):
            mask_now = attention_mask[:, : prompt_len + t]
            s_logits, caches[0] = _step(student, input_ids, mask_now, step_positions, caches[0])
            t_logits = None
            if teacher is not None:
                t_logits, caches[1] = _step(teacher, input_ids, mask_now, step_positions, caches[1])
                if t == 0 and t_logits.shape[-1] != s_logits.shape[-1]:
                    raise MinillmError(
                        f"student and teacher vocabularies differ: student logits have "
                        f"{s_logits.shape[-1]} entries, teacher logits {t_logits.shape[-1]}; "
                        "they must share one tokenizer"
                    )

            s_logp = torch.log_softmax(s_logits.float(), dim=-1)
            t_logp = torch.log_softmax(t_logits.float(), dim=-1) if t_logits is not None else None
            sample_s, sample_t = s_logits, t_logits
            if logits_processor is not None:  # shapes what is sampled, not the recorded log-probs
                so_far = response_ids[:, :t]
                sample_s = logits_processor(so_far, s_logits)
                sample_t = logits_processor(so_far, t_logits) if t_logits is not None else None
            token, token_mix_lp = _sample_from_mixture(
                sample_s,
                sample_t,
                sampling.teacher_mix_alpha,
                sampling.temperature,
                sampling.top_k,
                sampling.top_p,
                generator,
                # at temperature 1 the unprocessed logits' log-softmax is the one just taken (x / 1 == x)
                logps=(s_logp, t_logp) if logits_processor is None else None,
            )

            alive = ~finished
            token = torch.where(alive, token, torch.full_like(token, pad_token_id))
            response_ids[:, t] = token
            response_mask[:, t] = alive.long()
            idx = token.unsqueeze(-1)
            student_lp[:, t] = s_logp.gather(-1, idx).squeeze(-1)
            mix_lp[:, t] = token_mix_lp
            if teacher_lp is not None:
                teacher_lp[:, t] = t_logp.gather(-1, idx).squeeze(-1)
            if keep_teacher_logits:
                teacher_logits_steps.append(t_logits)
            if eos_ids is not None:
                finished = finished | (alive & torch.isin(token, eos_ids))
            steps = t + 1
            bar.update(1)

            if steps == max_new_tokens:
                break
            if eos_ids is not None and steps % check_every == 0:
                done = bool(finished.all())
                if _all_ranks(done, device) if lockstep else done:
                    break
            # Feed the new token: position = cumsum(mask) − 1 (clamped), as in Rollout.full_input.
            attention_mask[:, prompt_len + t] = alive.to(attention_mask.dtype)
            step_positions = (n_real + alive.long() - 1).clamp(min=0).unsqueeze(-1)
            n_real = n_real + alive.long()
            input_ids = token.unsqueeze(-1)
    finally:
        bar.close()

    # Trim to the longest row (the finish check may lag a few steps behind on accelerators).
    length = int(response_mask[:, :steps].sum(-1).max())
    mask = response_mask[:, :length]
    kept_logits = None
    if keep_teacher_logits:
        kept_logits = torch.stack(teacher_logits_steps[:length], dim=1)
        kept_logits.mul_(mask.unsqueeze(-1).to(kept_logits.dtype))  # in place: this can be large
    fmask = mask.float()
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=response_ids[:, :length].contiguous(),
        response_mask=mask.contiguous(),
        student_logprobs=student_lp[:, :length] * fmask,
        teacher_logprobs=teacher_lp[:, :length] * fmask if teacher_lp is not None else None,
        mix_logprobs=mix_lp[:, :length] * fmask,
        teacher_logits=kept_logits,
        pad_token_id=pad_token_id,
    )


def _low_precision_decoder(model: nn.Module) -> nn.Module:
    """``model``'s copy with low-precision linear weights under autocast (``static_decode.decoder``), else
    ``model`` itself, wrapper and all."""
    inner, wrapper = _unwrap(model), model
    while wrapper is not inner:  # a torch.compile wrapper (objective.compile_decode) decodes as it is
        if isinstance(getattr(wrapper, "_orig_mod", None), nn.Module):
            return model
        wrapper = getattr(wrapper, "module", None) or wrapper._orig_mod
    device = next(inner.parameters()).device
    copy = static_decode.decoder(inner, device)
    return model if copy is inner else copy


def _step(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, kv_cache):
    """One forward with KV cache; returns last-position logits (B, V) and the cache."""
    if isinstance(kv_cache, static_decode.Slot):
        return kv_cache.step(input_ids, attention_mask, position_ids), kv_cache
    names = _forward_params(type(_unwrap(model)))
    # transformers 5.x names it `cache`; `past_key_values` is the 4.x name (still accepted, deprecated).
    cache_kw = "past_key_values" if "past_key_values" in names and "cache" not in names else "cache"
    kwargs = {cache_kw: kv_cache, "use_cache": True}
    if "logits_to_keep" in names:
        kwargs["logits_to_keep"] = 1  # only the last position's logits are needed
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
    new_cache = out.cache if hasattr(out, "cache") else out.past_key_values
    return out.logits[:, -1, :], new_cache


@functools.cache
def _forward_params(model_cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_cls.forward).parameters)


def _unwrap(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside DDP (``.module``) or torch.compile (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _sample_from_mixture(
    s_logits: Tensor,
    t_logits: Tensor | None,
    alpha: float,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
    *,
    logps: tuple[Tensor, Tensor | None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw one token per row from p̃ = α·p_τ + (1−α)·q_τ, then top-k / top-p filtered.

    ``logps``: the fp32 log-softmax of ``s_logits`` and ``t_logits`` at temperature 1, where the caller has
    them; reused (not recomputed) when the temperature is 1.

    Returns the tokens (B,) and log p̃ of each under the filtered, renormalised distribution
    (0 for greedy decoding). With alpha == 0 the teacher's logits are never looked at.
    """
    tau = temperature if temperature > 0 else 1.0

    def log_softmax(logits: Tensor, which: int) -> Tensor:
        if tau == 1.0 and logps is not None and logps[which] is not None:
            return logps[which]
        return torch.log_softmax(logits.float() / tau, dim=-1)

    if alpha == 0.0 or t_logits is None:
        mix_logp = log_softmax(s_logits, 0)
    elif alpha == 1.0:
        mix_logp = log_softmax(t_logits, 1)
    else:
        # Mix as probabilities, computed in log space for stability.
        mix_logp = torch.logaddexp(
            log_softmax(t_logits, 1) + math.log(alpha), log_softmax(s_logits, 0) + math.log1p(-alpha)
        )
    bad = None
    if alpha > 0.0 and t_logits is not None:
        bad = torch.isnan(mix_logp).any(dim=-1) | torch.isposinf(mix_logp).any(dim=-1)
        if bad.any():
            # A non-finite teacher: sample those rows from the student so decoding goes on, and record
            # NaN as their log p̃ so the update that would use them is detected and skipped.
            student = log_softmax(s_logits, 0)
            mix_logp = torch.where(bad.unsqueeze(-1), student, mix_logp)
        else:
            bad = None
    if temperature == 0:
        token = mix_logp.argmax(dim=-1)
        picked = torch.zeros(token.shape, dtype=torch.float32, device=token.device)
    else:
        if top_k > 0 or top_p < 1.0:
            mix_logp = torch.log_softmax(_filter_top_k_top_p(mix_logp, top_k, top_p), dim=-1)
        token = draw(mix_logp.exp(), generator)
        picked = mix_logp.gather(-1, token.unsqueeze(-1)).squeeze(-1)
    if bad is not None:
        picked = picked.masked_fill(bad, float("nan"))
    return token, picked


def draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One token per row (B,) from the unnormalised probabilities ``probs`` (B, V): the draws of
    ``torch.multinomial(probs, 1, generator=generator)``, for the same generator state, at a third to a half of its
    cost on CPU (``make bench``'s ``pairs.draw``).

    torch's one-sample multinomial is argmax(p / q) with q ~ Exp(1) from ``exponential_``, whose CPU kernel
    takes a float64 uniform u per entry and returns −log1p(−u) one element at a time (most of a small model's
    sampling time). Here u comes from ``uniform_`` in float64 over the same layout (the same 64-bit draws per
    entry, in the same order) and the logarithm runs vectorised, so q, the tokens and the generator's state
    after are the same (``tests/test_rollout.py`` checks the tokens and the state against
    ``torch.multinomial``). On other devices, and inside :func:`multinomial_draws` (benchmarks: the sampler
    as it drew before), torch's own kernel samples.
    """
    if probs.device.type != "cpu" or _draw_with_multinomial:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    # torch.multinomial's own check: a NaN, infinite, negative or all-zero row has no distribution to sample from
    total = probs.sum(-1)
    if not bool(((torch.isfinite(total) & (total > 0)).all() & (probs.amin() >= 0)).item()):
        # not the user's input but the model's numbers (as torch.multinomial's own RuntimeError)
        raise RuntimeError(
            "sampling: a row of the distribution to sample from holds NaN, inf, negative or only zero "
            "probabilities (non-finite model logits?)"
        )
    # in probs' own memory layout, as exponential_ fills torch.multinomial's empty_like(probs)
    u = torch.empty_like(probs, dtype=torch.float64).uniform_(generator=generator)
    q = torch.log1p(u.neg_()).neg_().to(probs.dtype)
    return (probs / q).argmax(-1)


_draw_with_multinomial = False


@contextlib.contextmanager
def multinomial_draws():
    """Within it, :func:`draw` calls ``torch.multinomial`` (the same tokens, its own cost): the old path of
    ``make bench``'s pairs."""
    global _draw_with_multinomial
    old = _draw_with_multinomial
    _draw_with_multinomial = True
    try:
        yield
    finally:
        _draw_with_multinomial = old


def _filter_top_k_top_p(logp: Tensor, top_k: int, top_p: float) -> Tensor:
    """Set to −inf every entry outside the top-k and outside the smallest top-p nucleus; (B, V)."""
    if top_k > 0 and top_k < logp.shape[-1]:
        kth = torch.topk(logp, top_k, dim=-1).values[..., -1:]
        logp = logp.masked_fill(logp < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logp, order = torch.sort(logp, dim=-1, descending=True)
        probs = torch.softmax(sorted_logp, dim=-1)
        # Drop a token when the mass strictly before it already reaches top_p (the top token always stays).
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logp = logp.masked_fill(drop, float("-inf"))
    return logp


def _eos_tensor(eos_token_id: int | Sequence[int] | None, device: torch.device) -> Tensor | None:
    if eos_token_id is None:
        return None
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    return torch.tensor(ids, dtype=torch.long, device=device)


def check_prompts(prompt_ids: Tensor, prompt_mask: Tensor) -> None:
    """Refuse prompts that are not a non-empty, left-padded (B, P) batch with a real last token."""
    if prompt_ids.ndim != 2 or prompt_ids.shape != prompt_mask.shape:
        raise MinillmError(
            f"prompt_ids and prompt_mask must both be (batch, length); got {tuple(prompt_ids.shape)} "
            f"and {tuple(prompt_mask.shape)}"
        )
    if prompt_ids.shape[0] == 0:
        raise MinillmError("prompt_ids has no rows")
    if prompt_ids.shape[1] == 0 or not bool(prompt_mask[:, -1].bool().all()):
        raise MinillmError(
            "prompts must be left-padded with at least one real token per row "
            "(prompt_mask[:, -1] must be 1 everywhere)"
        )
