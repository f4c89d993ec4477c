"""The run's one tokenizer, shared by teacher and student: from a folder, or trained once and cached."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from minillm.models.loading import load_tokenizer
from minillm.models.tiny import train_tokenizer

log = logging.getLogger(__name__)


def resolve_tokenizer(cfg, records):
    """The shared tokenizer: tokenizer.path, else the student's or teacher's folder, else trained and cached."""
    if cfg.tokenizer.get("path"):
        return load_tokenizer(cfg.tokenizer.path, "tokenizer.path")
    for key in ("student", "teacher"):
        spec = cfg.get(key)
        if spec is not None and spec.get("path"):
            return load_tokenizer(spec.path, f"{key}.path")
    texts = [f"{r['instruction']}\n{r['context']}\n{r['response']}" for r in records["train"]]
    digest = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:12]
    folder = Path(cfg.cache_dir) / "tokenizers" / f"bpe{cfg.tokenizer.vocab_size}-{digest}"
    if (folder / "tokenizer.json").is_file():
        log.info("loading the cached tokenizer from %s", folder)
        return load_tokenizer(folder)
    log.info(
        "training a %d-token byte-level BPE on the train split into %s", cfg.tokenizer.vocab_size, folder
    )
    train_tokenizer(texts, cfg.tokenizer.vocab_size, folder)
    return load_tokenizer(folder)
