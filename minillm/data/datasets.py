"""Tokenised datasets and collators: SFT examples, prompts for generation, pre-training blocks.

Conventions of the reference: no BOS; the response ends with EOS, which is trained on; prompt tokens
never count in the loss; prompts longer than the limit are dropped (and counted); prompts are
left-padded for generation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from minillm.data.template import PromptTemplate

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


@dataclass
class Example:
    """One tokenised record: prompt ids, response ids (ending with EOS unless truncated), its index."""

    prompt_ids: list[int]
    response_ids: list[int]
    index: int


def tokenize_records(
    records: list[dict],
    tokenizer,
    template: PromptTemplate,
    *,
    max_prompt_len: int,
    max_response_len: int,
    split: str = "",
) -> list[Example]:
    """Tokenise records; drop prompts over ``max_prompt_len`` tokens and say how many went."""
    prompts = [template.format(r) for r in records]
    responses = [r["response"].strip() for r in records]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
    examples, dropped, truncated = [], 0, 0
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        if len(p) > max_prompt_len:
            dropped += 1
            continue
        r = r + [tokenizer.eos_token_id]
        if len(r) > max_response_len:
            truncated += 1
            r = r[:max_response_len]
        examples.append(Example(p, r, i))
    if dropped:
        log.warning(
            "%s: dropped %d of %d prompts longer than data.max_prompt_len=%d tokens",
            split or "data",
            dropped,
            len(records),
            max_prompt_len,
        )
    if truncated:
        log.warning(
            "%s: truncated %d responses to data.max_response_len=%d tokens",
            split or "data",
            truncated,
            max_response_len,
        )
    return examples


class ListDataset(Dataset):
    def __init__(self, items: list):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Batches of similar length, to cut padding: shuffle, sort within windows of ``window`` batches,
    cut into batches, shuffle the batches. Deterministic given the generator's state."""

    def __init__(self, lengths: list[int], batch_size: int, generator: torch.Generator, window: int = 50):
        self.lengths = lengths
        self.batch_size = batch_size
        self.generator = generator
        self.window = window

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start : start + span], key=lambda i: self.lengths[i])
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[b]

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


def collate_sft(examples: list[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded prompt+response with labels: -100 on prompt and padding, response and EOS trained."""
    lengths = [len(e.prompt_ids) + len(e.response_ids) for e in examples]
    width = max(lengths)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        ids = e.prompt_ids + e.response_ids
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, len(e.prompt_ids) : len(ids)] = torch.tensor(e.response_ids)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "index": torch.tensor([e.index for e in examples]),
    }


def collate_prompts(examples: list[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompts for generation (and the record index, to find references and checkers)."""
    width = max(len(e.prompt_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.prompt_ids)
        input_ids[row, width - n :] = torch.tensor(e.prompt_ids)
        attention_mask[row, width - n :] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "index": torch.tensor([e.index for e in examples]),
    }


def pretrain_blocks(texts: list[str], tokenizer, block_size: int) -> torch.Tensor:
    """Concatenate documents (EOS between them) and cut into fixed blocks across boundaries, (N, block)."""
    ids: list[int] = []
    for chunk in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(chunk)
        ids.append(tokenizer.eos_token_id)
    n_blocks = len(ids) // block_size
    return torch.tensor(ids[: n_blocks * block_size], dtype=torch.long).view(n_blocks, block_size)
