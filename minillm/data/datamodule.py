"""The LightningDataModule: records → tokenised splits → loaders for SFT, rollout prompts and L_PT."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from minillm.data.datasets import (
    Example,
    ListDataset,
    ResumableBatches,
    collate_prompts,
    collate_sft,
    pretrain_blocks,
    tokenize_records,
)
from minillm.data.records import SPLITS, load_splits, normalise_record
from minillm.data.template import PromptTemplate
from minillm.errors import MinillmError
from minillm.instantiate import check_call, instantiate_node

log = logging.getLogger(__name__)


def bundled_dir(data_cfg, cache_dir: str | Path) -> Path:
    """Write the bundled splits once into the cache (they are deterministic from the seed and sizes)."""
    from minillm.data.bundled import GENERATOR_VERSION, write_splits

    name = f"bundled-v{GENERATOR_VERSION}-s{data_cfg.seed}-{data_cfg.n_train}-{data_cfg.n_valid}-{data_cfg.n_test}"
    folder = Path(cache_dir) / "data" / name
    if not (folder / "meta.json").is_file():
        log.info("generating the bundled data set into %s", folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_splits(
            folder,
            seed=data_cfg.seed,
            n_train=data_cfg.n_train,
            n_valid=data_cfg.n_valid,
            n_test=data_cfg.n_test,
        )
    return folder


def bundled_records(data_cfg, cache_dir: str | Path) -> dict[str, list[dict]]:
    """``data=bundled``: the procedurally generated splits (written once into the cache)."""
    return load_splits(bundled_dir(data_cfg, cache_dir), valid_size=0, test_size=0, seed=data_cfg.seed)


def jsonl_records(data_cfg, cache_dir: str | Path) -> dict[str, list[dict]]:
    """``data=jsonl``: the user's JSONL file (split by ``valid_size``/``test_size``) or folder of splits, each
    split cut to its first ``n_train`` / ``n_valid`` / ``n_test`` records where those are set."""
    if not data_cfg.get("path"):
        raise MinillmError("data.path: set it to a JSONL file or a folder with train/valid/test.jsonl")
    splits = load_splits(
        data_cfg.path, valid_size=data_cfg.valid_size, test_size=data_cfg.test_size, seed=data_cfg.seed
    )
    for split in ("train", "valid", "test"):  # data.n_train … : at most that many (debug=smoke sets them)
        cap = data_cfg.get(f"n_{split}")
        if cap is not None:
            splits[split] = splits[split][:cap]
    return splits


def load_records(data_cfg, cache_dir: str | Path) -> dict[str, list[dict]]:
    """The three splits as canonical records, from ``data.records``: a ``_partial_`` function of the data
    config and the cache folder (``bundled_records``, ``jsonl_records``, or one of the user's own, named by
    ``data.records._target_``) returning ``{"train": [...], "valid": [...], "test": [...]}``."""
    node = data_cfg.get("records")
    loader = instantiate_node(node, "data.records")
    target = node._target_
    check_call(loader, "data.records", data_cfg, cache_dir)
    splits = loader(data_cfg, cache_dir)
    if not isinstance(splits, dict):
        raise MinillmError(
            f"data.records._target_={target}: must return a dict of lists of records under {list(SPLITS)}, "
            f"got {type(splits).__name__}"
        )
    for split in SPLITS:
        if not isinstance(splits.get(split), list):
            raise MinillmError(
                f"data.records._target_={target}: must return a list of records under {split!r}, got "
                f"{type(splits.get(split)).__name__} (the dict has {sorted(map(str, splits))})"
            )
    empty = [s for s in SPLITS if not splits[s]]
    if empty:
        raise MinillmError(f"data.records._target_={target}: returned no {' or '.join(empty)} records")
    return {
        s: [normalise_record(r, f"data.records ({target}) {s}[{i}]") for i, r in enumerate(splits[s])]
        for s in SPLITS
    }


class ResumableLoader(DataLoader):
    """The train loader. Its position lives in its ResumableBatches sampler, which the module saves and
    restores (``checkpoint["minillm"]["data"]``) with the exact count of batches trained on; the loader
    itself therefore has no state of its own to give Lightning — but it is resumable, and says so.

    Not dead code: Lightning calls ``state_dict`` when it saves a checkpoint (the empty dict is stored
    under ``loops.fit_loop.combined_loader``) and ``load_state_dict`` on resume; and a loader without the
    pair (not ``lightning.fabric.utilities.types._Stateful``) makes every mid-epoch resume warn "your
    dataloader is not resumable" (``training_epoch_loop.py``), which here would be false."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class InstructionDataModule(L.LightningDataModule):
    """Serves the tokenised splits.

    ``train_mode="sft"`` gives teacher-forced prompt+response batches; ``"prompts"`` gives left-padded
    prompt batches of ``prompt_batch_size`` for on-policy rollouts.
    """

    def __init__(
        self,
        data_cfg,
        tokenizer,
        records: dict[str, list[dict]],
        *,
        seed: int = 0,
        train_mode: str = "sft",
        prompt_batch_size: int | None = None,
    ):
        super().__init__()
        self.cfg = data_cfg
        self.tokenizer = tokenizer
        self.records = records
        self.seed = seed
        self.train_mode = train_mode
        self.prompt_batch_size = prompt_batch_size or data_cfg.batch_size
        template = PromptTemplate.from_name(data_cfg.template, tokenizer)
        self.examples = {
            split: tokenize_records(
                recs,
                tokenizer,
                template,
                max_prompt_len=data_cfg.max_prompt_len,
                max_response_len=data_cfg.max_response_len,
                split=split,
            )
            for split, recs in records.items()
        }
        for split, examples in self.examples.items():
            if not examples:
                raise MinillmError(
                    f"data: all {len(records[split])} {split} prompts are longer than "
                    f"data.max_prompt_len={data_cfg.max_prompt_len} tokens; raise it or shorten the prompts"
                )
        log.info("data: %s", ", ".join(f"{s} {len(e)}" for s, e in self.examples.items()))
        self._sft = partial(collate_sft, pad_token_id=tokenizer.pad_token_id)
        self._prompts = partial(collate_prompts, pad_token_id=tokenizer.pad_token_id)
        self.train_sampler: ResumableBatches | None = None
        self.pending_sampler_state: dict | None = None  # set when resuming before the sampler exists

    def replace_train_responses(self, responses: list[str]) -> None:
        """SeqKD: train on these responses (one per train example, in order) instead of the gold ones."""
        examples = self.examples["train"]
        eos, limit = self.tokenizer.eos_token_id, self.cfg.max_response_len
        ids = self.tokenizer([r.strip() for r in responses], add_special_tokens=False)["input_ids"]
        self.examples["train"] = [
            Example(e.prompt_ids, (r + [eos])[:limit], e.index) for e, r in zip(examples, ids, strict=True)
        ]

    def train_global_batch(self, world_size: int) -> int:
        """Examples per training step over all ``world_size`` data-parallel ranks."""
        per_rank = self.prompt_batch_size if self.train_mode == "prompts" else self.cfg.batch_size
        return int(per_rank) * int(world_size)

    def train_batches_in_epoch(self, epoch: int) -> int:
        """How many batches epoch ``epoch`` of the train loader has."""
        self.train_dataloader()  # builds the sampler, which is kept for the whole run
        return len(self.train_sampler.batches(epoch))

    def train_dataloader(self):
        """Train batches from one ResumableBatches sampler, kept for the whole run (it carries the
        data position through checkpoints)."""
        train = self.examples["train"]
        trainer = self.trainer
        # data-parallel: this rank's slice of each global batch (trainer.use_distributed_sampler is off)
        shard = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        old = self.train_sampler
        if old is not None and (old.rank, old.world_size) != shard:  # built before the trainer was attached
            self.train_sampler = None
        if self.train_sampler is None:
            rank, world = shard
            if self.train_mode == "prompts":
                self.train_sampler = ResumableBatches(
                    len(train), self.prompt_batch_size, self.seed, drop_last=True, rank=rank, world_size=world
                )
            else:
                lengths = None
                if self.cfg.get("group_by_length", True):
                    lengths = [len(e.prompt_ids) + len(e.response_ids) for e in train]
                self.train_sampler = ResumableBatches(
                    len(train), self.cfg.batch_size, self.seed, lengths=lengths, rank=rank, world_size=world
                )
            if old is not None:  # the same position, now sharded
                self.train_sampler.epoch, self.train_sampler.consumed = old.epoch, old.consumed
                self.train_sampler._skip = old._skip
            if self.pending_sampler_state is not None:
                self.train_sampler.load_state_dict(self.pending_sampler_state)
                self.pending_sampler_state = None
            if len(self.train_sampler) == 0:
                raise MinillmError(
                    f"data: {len(train)} train examples make no full batch of "
                    f"{self.train_sampler.batch_size * self.train_sampler.world_size}"
                )
        return ResumableLoader(
            ListDataset(self.examples["train"]),
            batch_sampler=self.train_sampler,
            collate_fn=self._prompts if self.train_mode == "prompts" else self._sft,
            num_workers=self.cfg.num_workers,
        )

    def val_dataloader(self):
        return DataLoader(
            ListDataset(self.examples["valid"]),
            batch_size=self.cfg.eval_batch_size,
            collate_fn=self._sft,
            num_workers=self.cfg.num_workers,
        )

    def pretrain_loader(self, batch_size: int) -> DataLoader:
        """Fixed-length blocks of the pre-training corpus, for the L_PT term."""
        from minillm.data.pretrain import load_pretrain_texts

        pt = self.cfg.pretrain
        texts = load_pretrain_texts(
            pt.source, path=pt.get("path"), max_chars=pt.get("max_chars"), seed=self.cfg.seed
        )
        blocks = pretrain_blocks(texts, self.tokenizer, pt.block_size)
        if len(blocks) == 0:
            raise MinillmError(f"data.pretrain: corpus is shorter than one block of {pt.block_size} tokens")
        log.info("pre-training corpus: %d blocks of %d tokens", len(blocks), pt.block_size)
        return DataLoader(
            ListDataset(list(blocks)),
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,
            generator=torch.Generator().manual_seed(self.seed + 1),
        )
