"""Loading the teacher, the student and their shared tokenizer from config.

A model is named by ``path`` (a local Hugging Face folder, or a hub id when the user has access) or
built from ``arch`` (random init, see ``minillm.models.tiny``). The teacher is frozen: eval mode,
no gradients; the training module keeps it out of the optimizer and out of checkpoints.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from minillm.errors import MinillmError
from minillm.models.lora import apply_lora, lora_settings
from minillm.models.tiny import build_model

log = logging.getLogger(__name__)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _check_path(path: str, key: str) -> None:
    """Fail fast on a path that is neither a local folder nor (with network) a plausible hub id."""
    if Path(path).exists():
        if not Path(path).is_dir():
            raise MinillmError(f"{key}={path}: expected a model folder, found a file")
        return
    looks_local = path.startswith((".", "/", "~")) or path.count("/") > 1
    if looks_local:
        raise MinillmError(f"{key}={path}: model path does not exist")
    if _offline():
        raise MinillmError(
            f"{key}={path}: no such local folder, and HF_HUB_OFFLINE=1 forbids fetching it from the hub"
        )


def load_model(
    spec, *, key: str, vocab_size: int | None = None, eos_token_id: int | None = None, seed: int = 0
):
    """Load ``spec.path`` or build ``spec.arch``; ``key`` (``teacher``/``student``) names it in errors."""
    if spec.get("path"):
        path = str(spec.path)
        _check_path(path, f"{key}.path")
        log.info("loading %s from %s", key, path)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        except (OSError, ValueError) as err:  # ValueError: a folder without a model's config.json
            raise MinillmError(
                f"{key}.path={path}: cannot load a causal LM ({str(err).splitlines()[0]})"
            ) from None
        return model
    if spec.get("arch"):
        if vocab_size is None:
            raise MinillmError(f"{key}.arch needs a tokenizer (set tokenizer.path or train one)")
        log.info("building %s from config (%s, random init)", key, spec.arch.get("model_type"))
        return build_model(dict(spec.arch), vocab_size, eos_token_id, seed=seed)
    raise MinillmError(f"{key}: set {key}.path (a model folder or hub id) or {key}.arch")


def load_tokenizer(path: str, key: str = "tokenizer.path"):
    """A tokenizer with pad = EOS when it has no pad token (GPT-2 style)."""
    _check_path(str(path), key)
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise MinillmError(f"{key}={path}: cannot load a tokenizer ({str(err).splitlines()[0]})") from None
    if tok.eos_token_id is None:
        raise MinillmError(f"{key}={path}: tokenizer has no EOS token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def freeze(model):
    """Eval mode and no gradients: the teacher is never trained."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def check_same_vocab(teacher, student, tokenizer) -> None:
    """Teacher and student must score the same token ids; fail clearly if their vocabularies differ."""
    t = teacher.get_output_embeddings().weight.shape[0]
    s = student.get_output_embeddings().weight.shape[0]
    if t != s:
        raise MinillmError(
            f"teacher and student vocabularies differ ({t} vs {s} output rows): they must share a tokenizer"
        )
    if len(tokenizer) > s:
        raise MinillmError(f"tokenizer has {len(tokenizer)} tokens but the models only {s} output rows")


def check_same_tokenizer(tokenizer, other_path: str, key: str) -> None:
    """When the other model ships its own tokenizer, it must map text to the same ids."""
    folder = Path(other_path)
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        return
    other = AutoTokenizer.from_pretrained(str(folder))
    if other.get_vocab() != tokenizer.get_vocab():
        raise MinillmError(
            f"{key}={other_path}: its tokenizer differs from the student's; distillation needs one"
        )


def weights_digest(model) -> str:
    """A short hash of the model's parameters: identifies a model beyond its path (the SeqKD cache's
    teacher, the evaluation cache's key, ``final_weights_sha1`` in results.json)."""
    h = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


TEACHER_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def objective_needs_teacher(cfg) -> bool:
    """The objective trains against the teacher (``objective.needs_teacher``, or a KD term)."""
    return bool(cfg.objective.get("needs_teacher", False)) or float(cfg.objective.get("kd_ratio", 0) or 0) > 0


def teacher_dtype(cfg) -> torch.dtype | None:
    """``fit.teacher_dtype``: auto = the half type of a bf16 / fp16 mixed precision, else as loaded."""
    choice = (cfg.get("fit") or {}).get("teacher_dtype", "auto")
    if choice in (None, "auto"):
        precision = str(cfg.trainer.precision)
        choice = "bf16" if precision.startswith("bf16") else "fp16" if precision.startswith("16") else None
    return TEACHER_DTYPES[choice] if choice else None


def cast_teacher(cfg, teacher) -> None:
    """The frozen teacher's weights in ``fit.teacher_dtype`` (inference only: reduced-precision weights
    halve its memory, and bf16 matmuls are faster where the device has them); with trainer.precision=auto
    not yet resolved, as loaded (``minillm.run`` casts again once it is)."""
    dtype = teacher_dtype(cfg)
    if dtype is not None:
        teacher.to(dtype)


def load_student(cfg, tokenizer):
    """The student as ``student`` (and ``student.lora``) describe it, untrained: its init."""
    student = load_model(
        cfg.student,
        key="student",
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        seed=cfg.seed,
    )
    lora = lora_settings(cfg.student)
    return student if lora is None else apply_lora(student, lora, seed=cfg.seed)


def gathered_student(module, cfg, tokenizer):
    """The module's student in one piece. Under ``strategy=fsdp`` its parameters are shards: every rank
    gathers the full weights (a collective: all ranks call this) into a fresh, unsharded copy, which
    replaces the sharded one in the module (for the best checkpoint's reload, the export and evaluation)."""
    from minillm.models.sharding import full_state_dict, is_sharded

    if not is_sharded(module.student):
        return module.student
    state = full_state_dict(module.student)
    fresh = load_student(cfg, tokenizer)
    fresh.load_state_dict(state)
    module.student = fresh
    return fresh


def load_models(cfg, tokenizer):
    """The student (``student``; with ``student.lora.r`` set, wrapped with LoRA adapters, the only part
    that trains) and, when the objective or the comparison table needs it, the frozen teacher
    (``teacher``; else None), checked to share the tokenizer."""
    student = load_student(cfg, tokenizer)
    has_teacher = bool(cfg.teacher.get("path") or cfg.teacher.get("arch"))
    if not (objective_needs_teacher(cfg) or (cfg.eval.compare and has_teacher)):
        return student, None
    if not has_teacher:
        raise MinillmError(f"objective={cfg.objective.name} needs a teacher: set teacher.path")
    teacher = freeze(
        load_model(
            cfg.teacher,
            key="teacher",
            vocab_size=len(tokenizer),
            eos_token_id=tokenizer.eos_token_id,
            seed=cfg.seed + 1,
        )
    )
    check_same_vocab(teacher, student, tokenizer)
    cast_teacher(cfg, teacher)
    if cfg.teacher.get("path"):
        check_same_tokenizer(tokenizer, cfg.teacher.path, "teacher.path")
    return student, teacher
