"""One model's sampled responses as text: prompts → left-padded batches → ``generate`` → decoded strings.

Used by evaluation (Rouge-L, validity, Distinct-4) and by SeqKD (the teacher's responses to the training
prompts). The prompts are anything with ``prompt_ids`` (``minillm.data.datasets.Example``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from minillm.rollout import vllm_engine
from minillm.rollout.options import SamplingOptions
from minillm.rollout.sampler import LogitsProcessor, generate


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists as one left-padded batch: ``input_ids`` and ``attention_mask`` (1 = real token),
    both (B, longest prompt), long."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        n = len(ids)
        input_ids[row, width - n :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - n :] = 1
    return input_ids, attention_mask


def decode_responses(tokenizer, response_ids: torch.Tensor, response_mask: torch.Tensor) -> list[str]:
    """Text of each generated response, without EOS and padding."""
    eos = tokenizer.eos_token_id
    texts = []
    for ids, mask in zip(response_ids.tolist(), response_mask.tolist(), strict=True):
        kept = [t for t, m in zip(ids, mask, strict=True) if m and t != eos]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
    return texts


def sample_responses(
    model,
    tokenizer,
    examples,
    sampling: SamplingOptions,
    *,
    batch_size: int,
    seed: int = 0,
    desc: str = "generate",
    progress: bool = True,
    logits_processor: LogitsProcessor | None = None,
) -> tuple[list[str], list[int]]:
    """Sample one response per example under ``sampling``; returns texts and response lengths in tokens
    (EOS included).

    One generator seeded with ``seed`` runs through the batches in order, so a seed gives the same
    samples for the same examples and ``batch_size`` (with ``sampler=vllm``, for any ``batch_size``: each
    row's engine seed is drawn from it in order). ``logits_processor`` is passed to ``generate``
    (evaluation's ``no_repeat_ngram_size``).
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    engine = vllm_engine.current() if logits_processor is None else None
    if engine is not None:  # sampler=vllm: every prompt in one call (the engine batches them itself)
        tokens = engine.sample_ids(model, [e.prompt_ids for e in examples], sampling, generator=generator)
        eos = tokenizer.eos_token_id
        texts = [
            tokenizer.decode([t for t in ids if t != eos], skip_special_tokens=True).strip() for ids in tokens
        ]
        return texts, [len(ids) for ids in tokens]
    texts, lengths = [], []
    batches = range(0, len(examples), batch_size)
    for start in tqdm(batches, desc=desc, disable=not progress, leave=False):
        prompt_ids, prompt_mask = left_pad(
            [e.prompt_ids for e in examples[start : start + batch_size]], sampling.pad_token_id
        )
        out = generate(
            model,
            prompt_ids.to(device),
            prompt_mask.to(device),
            sampling,
            generator=generator,
            logits_processor=logits_processor,
        )
        texts.extend(decode_responses(tokenizer, out.response_ids, out.response_mask))
        lengths.extend(out.response_mask.sum(dim=1).tolist())
    return texts, lengths
