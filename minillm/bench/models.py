"""The teacher and student (loaded, or random init from an architecture) and random prompts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from minillm.bench.settings import Runtime, positive
from minillm.errors import MinillmError
from minillm.training.round import compile_decoders

log = logging.getLogger(__name__)


@dataclass
class Models:
    student: torch.nn.Module  # trained, full precision (autocast on CUDA)
    teacher: torch.nn.Module  # frozen, eval mode, reduced precision with dtype=bf16
    decode_student: torch.nn.Module  # what the rollout calls: the model, or its torch.compile wrapper
    decode_teacher: torch.nn.Module
    vocab_size: int
    eos_token_id: int
    info: dict


def _eos_of(model) -> int | None:
    eos = model.config.eos_token_id
    return eos[0] if isinstance(eos, list | tuple) else eos


def _vocab_of(model) -> int:
    return model.get_output_embeddings().weight.shape[0]


def load_bench_models(cfg: DictConfig, runtime: Runtime) -> Models:
    """Teacher and student from ``*_path`` folders, or random init from ``*.arch`` when a folder is missing."""
    from minillm.models.loading import freeze, load_model, load_tokenizer
    from minillm.models.tiny import build_model, count_parameters

    found = {}
    for key in ("teacher", "student"):
        path = cfg.get(f"{key}_path")
        if path and Path(path).is_dir():
            found[key] = load_model(OmegaConf.create({"path": str(path)}), key=f"{key}_path")
        elif path and not cfg.random_init_fallback:
            raise MinillmError(f"{key}_path={path}: no such model folder (random_init_fallback=false)")
    loaded = next(iter(found.values()), None)
    tokenizer_path = cfg.get("tokenizer_path")
    if loaded is not None:
        vocab, eos, vocab_from = _vocab_of(loaded), _eos_of(loaded), "the loaded model"
    elif tokenizer_path and Path(tokenizer_path).is_dir():
        tok = load_tokenizer(tokenizer_path, "tokenizer_path")
        vocab, eos, vocab_from = len(tok), tok.eos_token_id, str(tokenizer_path)
    else:
        vocab, eos, vocab_from = positive(cfg, "vocab_size"), 0, "vocab_size"
    eos = 0 if eos is None else int(eos)

    info: dict = {"vocab_size": vocab, "vocab_from": vocab_from}
    models = {}
    for i, key in enumerate(("teacher", "student")):
        if key in found:
            model, source = found[key], str(cfg.get(f"{key}_path"))
        else:
            arch = cfg[key].get("arch")
            if not arch:
                raise MinillmError(f"{key}.arch: no architecture to build (and {key}_path is not a folder)")
            path = cfg.get(f"{key}_path")
            why = f"{path} not found" if path else f"{key}_path=null"
            model = build_model(
                OmegaConf.to_container(arch, resolve=True), vocab, eos, seed=int(cfg.seed) + i
            )
            source = f"random init of {cfg[key].get('name', key)} ({why})"
            log.warning("%s: %s", key, source)
        if _vocab_of(model) != vocab:
            raise MinillmError(f"{key}: {_vocab_of(model)} output rows, but the other model has {vocab}")
        if cfg.attn_implementation:
            model.set_attn_implementation(str(cfg.attn_implementation))
        models[key] = model.to(runtime.device)
        info[key] = {
            "source": source,
            "random_init": key not in found,
            "parameters": count_parameters(model),
            "attn_implementation": model.config._attn_implementation,
        }

    teacher = freeze(models["teacher"])
    if runtime.dtype == "bf16":
        teacher.to(torch.bfloat16)  # inference only: reduced-precision weights, logits kept in bf16
    student = models["student"]  # the round runs its updates in eval mode (objective.disable_dropout)
    decode_student, decode_teacher = student, teacher
    if runtime.compile:
        decode_student, decode_teacher = compile_decoders(student, teacher)
    return Models(student, teacher, decode_student, decode_teacher, vocab, eos, info)


def make_prompts(
    models: Models, batch: int, length: int, seed: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P) random token ids other than EOS, no padding (timings do not depend on the text)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, models.vocab_size - 1, (batch, length), generator=gen)
    ids = ids + (ids >= models.eos_token_id).long()  # skip EOS
    return ids.to(device), torch.ones_like(ids).to(device)
