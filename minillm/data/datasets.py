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
from minillm.rollout.generate import left_pad

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


def length_grouped_batches(
    lengths: list[int], batch_size: int, generator: torch.Generator, window: int = 50
) -> list[list[int]]:
    """Batches of similar length, to cut padding: shuffle, sort within windows of ``window`` batches,
    cut into batches, shuffle the batches. Deterministic given the generator's state."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[b] for b in torch.randperm(len(batches), generator=generator).tolist()]


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, drop_last: bool) -> list[list[int]]:
    order = torch.randperm(n, generator=generator).tolist()
    stop = n - n % batch_size if drop_last else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


class ResumableBatches(torch.utils.data.Sampler):
    """A batch sampler whose order is a function of (seed, epoch) only, so a run resumes mid-epoch.

    Epoch ``e`` always yields the same batches. ``consumed`` counts the batches of the current epoch
    that training has finished (the module advances it); ``state_dict`` / ``load_state_dict`` carry
    (epoch, consumed) through a checkpoint, and the next ``__iter__`` after a load skips the batches
    already trained on. ``lengths`` given: length-grouped batches; otherwise plain shuffled ones.

    Data-parallel (``world_size`` > 1): the batches are drawn as one process would draw batches of
    ``batch_size × world_size`` (same seed, same order), and rank ``rank`` takes its contiguous
    ``batch_size`` slice of each; a last global batch too small to give every rank a full slice is
    dropped. So N ranks with B per batch see, together, what one process with N·B sees.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        *,
        lengths: list[int] | None = None,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.n = n
        self.batch_size = batch_size
        self.seed = seed
        self.lengths = lengths
        self.drop_last = drop_last
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = -1  # the epoch being iterated; -1 before the first
        self.consumed = 0
        self._skip = 0

    def batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        size = self.batch_size * self.world_size
        if self.lengths is not None:
            batches = length_grouped_batches(self.lengths, size, generator)
        else:
            batches = shuffled_batches(self.n, size, generator, self.drop_last)
        if self.world_size == 1:
            return batches
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return [b[mine] for b in batches if len(b) == size]

    def __iter__(self):
        self.epoch += 1
        batches = self.batches(self.epoch)
        if self._skip >= len(batches):  # the checkpoint was taken at the end of an epoch
            self.epoch += 1
            batches, self._skip = self.batches(self.epoch), 0
        start, self._skip = self._skip, 0
        self.consumed = start
        yield from batches[start:]

    def __len__(self) -> int:
        size = self.batch_size * self.world_size
        if self.drop_last or self.world_size > 1:
            return self.n // size
        return (self.n + size - 1) // size

    def state_dict(self) -> dict:
        # global_batch: what one consumed batch is worth in examples (a resume at another world size rescales)
        return {
            "epoch": self.epoch,
            "consumed": self.consumed,
            "global_batch": self.batch_size * self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"]) - 1
        self._skip = int(state["consumed"])


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
    input_ids, attention_mask = left_pad([e.prompt_ids for e in examples], pad_token_id)
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
