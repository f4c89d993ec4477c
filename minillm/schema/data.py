"""``data``: one schema per choice (data=bundled, data=jsonl), each the home of its keys and defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from minillm.schema.rules import non_negative, one_of, positive

TEMPLATES = ("alpaca", "chat", "short")


def _loader(name: str):
    """The ``records`` node: what loads the splits, any function (data config, cache folder) -> splits."""
    return field(default_factory=lambda: {"_target_": f"minillm.data.datamodule.{name}", "_partial_": True})


@dataclass
class PretrainConfig:
    """The corpus of MiniLLM's pre-training term L_PT (read only with objective.pt_coef > 0)."""

    # general English, as OpenWebText is for GPT-2: pydoc | world | both | file (data.pretrain.path)
    source: str = one_of("pydoc", "pydoc", "world", "both", "file")
    path: str | None = None
    block_size: int = positive(128)
    max_chars: int = positive(400000)


@dataclass
class BundledData:
    """The embedded default: a procedurally generated Dolly-style data set with a validity checker per record."""

    records: Any = _loader("bundled_records")
    seed: int = 0
    n_train: int = positive(10000)
    n_valid: int = positive(500)
    n_test: int = positive(500)
    template: str = one_of("short", *TEMPLATES)  # short | alpaca (the reference's long preamble) | chat
    max_prompt_len: int = positive(256)
    max_response_len: int = positive(160)
    batch_size: int = positive(32)
    eval_batch_size: int = positive(64)
    num_workers: int = non_negative(0)
    group_by_length: bool = True  # batches of similar length (less padding)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


@dataclass
class JsonlData:
    """Your own Dolly-format data: `data.path=` a JSONL file (split by valid_size/test_size) or a folder holding
    train.jsonl, valid.jsonl and test.jsonl. Fields: instruction, context|input, response|output."""

    records: Any = _loader("jsonl_records")
    path: str = MISSING
    seed: int = 0
    valid_size: int = non_negative(1000)
    test_size: int = non_negative(500)
    # at most this many records of each split, the first after the split (null: all); debug=smoke sets them
    n_train: int | None = positive(None)
    n_valid: int | None = positive(None)
    n_test: int | None = positive(None)
    template: str = one_of("alpaca", *TEMPLATES)
    max_prompt_len: int = positive(256)
    max_response_len: int = positive(256)
    batch_size: int = positive(8)
    eval_batch_size: int = positive(16)
    num_workers: int = non_negative(0)
    group_by_length: bool = True
    pretrain: PretrainConfig = field(
        default_factory=lambda: PretrainConfig(block_size=512, max_chars=2000000)
    )
