"""The teacher and student a run would train with, loaded by the run's own loader, and random prompts.

``conf/bench.yaml`` composes the run's ``teacher`` and ``student`` groups (``teacher=embedded`` and
``student=embedded`` by default; ``teacher=tiny_llama`` builds from an architecture, ``teacher.path=…`` loads
a folder, ``teacher=smollm2_135m`` converts its GGUF on first use) and its ``tokenizer`` node, and
:func:`bench_models` hands them to ``minillm.models.loading.load_models``: the same seeds, the same frozen
teacher in ``fit.teacher_dtype`` (``auto``: bf16 with ``dtype=bf16``, as ``trainer.precision=bf16-mixed``),
the same vocabulary and tokenizer checks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, open_dict

from minillm.bench.settings import Runtime, check_on_policy, positive
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
    tokenizer: object  # the run's tokenizer, or a word-level stand-in of tokenizer.vocab_size ids
    info: dict


def _vocab_of(model) -> int:
    return model.get_output_embeddings().weight.shape[0]


def stand_in_tokenizer(vocab_size: int, eos_token_id: int = 0):
    """A word-level tokenizer of ``vocab_size`` ids ``t0``, ``t1``, … with ``t<eos>`` as EOS and pad: what
    models built from an architecture get where a run would train a BPE on its data (bench's prompts are
    random ids, so the text never matters)."""
    from tokenizers import Tokenizer
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    eos = f"t{eos_token_id}"
    words = Tokenizer(tok_models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token=eos))
    return PreTrainedTokenizerFast(tokenizer_object=words, eos_token=eos, pad_token=eos)


def bench_tokenizer(cfg: DictConfig):
    """(tokenizer, where from): the run's (``tokenizer.path``, else the student's or the teacher's folder),
    else a stand-in of ``tokenizer.vocab_size`` ids with EOS 0."""
    from minillm.models.tokenizers import resolve_tokenizer

    for key in ("tokenizer", "student", "teacher"):
        if cfg[key].get("path"):
            return resolve_tokenizer(cfg, records=None), f"{key}.path={cfg[key].path}"
    vocab = positive(cfg.tokenizer, "vocab_size", "tokenizer.vocab_size")
    return stand_in_tokenizer(vocab), f"tokenizer.vocab_size={vocab}"


def _as_loaded_in_a_run(cfg: DictConfig) -> DictConfig:
    """The config with ``trainer.precision`` as a run with bench's ``dtype`` would have it (fp32: 32-true,
    bf16: bf16-mixed), which ``fit.teacher_dtype=auto`` reads."""
    view = cfg.copy()
    with open_dict(view):
        view.trainer = {"precision": "bf16-mixed" if cfg.dtype == "bf16" else "32-true"}
    return view


def bench_models(cfg: DictConfig, runtime: Runtime) -> Models:
    """Teacher and student from the composed ``teacher`` / ``student`` groups, loaded as a run loads them."""
    from minillm.models.loading import load_models
    from minillm.models.prepare import prepare_models
    from minillm.models.tiny import count_parameters

    check_on_policy(cfg)
    prepare_models(cfg)  # gguf / keep_every presets: converted into cache_dir on first use, as a run does
    tokenizer, vocab_from = bench_tokenizer(cfg)
    student, teacher = load_models(_as_loaded_in_a_run(cfg), tokenizer)  # the round trains in eval mode
    info: dict = {"vocab_size": _vocab_of(student), "vocab_from": vocab_from}
    for key, model in (("teacher", teacher), ("student", student)):
        spec = cfg[key]
        if spec.get("path"):
            source = str(spec.path)
        else:
            source = f"random init of {spec.get('name', key)} ({key}.arch, {key}.path=null)"
            log.warning("%s: %s", key, source)
        if cfg.attn_implementation:
            model.set_attn_implementation(str(cfg.attn_implementation))
        model.to(runtime.device)
        info[key] = {
            "source": source,
            "random_init": not spec.get("path"),
            "parameters": count_parameters(model),
            "attn_implementation": model.config._attn_implementation,
        }
    decode_student, decode_teacher = student, teacher
    if runtime.compile:
        decode_student, decode_teacher = compile_decoders(student, teacher)
    eos = int(tokenizer.eos_token_id)
    return Models(student, teacher, decode_student, decode_teacher, info["vocab_size"], eos, tokenizer, info)


def make_prompts(
    models: Models, batch: int, length: int, seed: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P) random token ids other than EOS, no padding (timings do not depend on the text)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, models.vocab_size - 1, (batch, length), generator=gen)
    ids = ids + (ids >= models.eos_token_id).long()  # skip EOS
    return ids.to(device), torch.ones_like(ids).to(device)
