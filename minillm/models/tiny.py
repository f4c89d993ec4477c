"""Small models and a tokenizer built from config, for the embedded default and for tests.

The tokenizer is a byte-level BPE trained on the instruction data itself (exact round trip, GPT-2
style, with pad = EOS). Models are Hugging Face causal LMs made from a config dict, so everything
downstream treats them exactly like a model loaded from the hub.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

log = logging.getLogger(__name__)
EOS = "<|endoftext|>"


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: str | Path | None = None):
    """Train a byte-level BPE tokenizer on ``texts``; EOS doubles as pad, as for GPT-2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)
    if out_dir is not None:
        hf_tok.save_pretrained(str(out_dir))
    return hf_tok


def build_model(arch: dict, vocab_size: int, eos_token_id: int, seed: int = 0):
    """A randomly initialised causal LM from ``arch`` (``model_type`` plus that config's own keys)."""
    arch = dict(arch)
    model_type = arch.pop("model_type")
    config = AutoConfig.for_model(
        model_type,
        vocab_size=vocab_size,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        **arch,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    log.info("built a %s with %.2fM parameters", model_type, count_parameters(model) / 1e6)
    return model


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
