"""LoRA students through peft: low-rank adapters train, the student's own weights stay frozen.

``student.lora.r`` (null: off) turns it on for any student preset. :func:`apply_lora` wraps the loaded
student in a ``peft`` model whose only trainable tensors are the adapters; the training modules then put
only those into the optimizer and the checkpoints (``minillm.training.resumable``). At the end of a run
:func:`export_student` writes ``best_model/``: by default the adapters merged into a plain Hugging Face
model (loads with ``AutoModelForCausalLM``, no peft needed), or with ``student.lora.export=adapters`` the
adapter folder with the unmerged base model in ``best_model/base/``.

peft is imported only when LoRA is asked for (the ``lora`` extra).
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from minillm.errors import MinillmError

log = logging.getLogger(__name__)

ALL_LINEAR = "all-linear"  # peft's shorthand: every linear (and GPT-2 Conv1D) layer but the output head
EXPORTS = ("merged", "adapters")


def lora_settings(student_cfg):
    """The ``student.lora`` node when LoRA is on (``r`` set), else None."""
    lora = student_cfg.get("lora") if student_cfg is not None else None
    if not lora or lora.get("r") is None:
        return None
    return lora


def is_lora(model) -> bool:
    """The model is a peft-wrapped (LoRA) student."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def _import_peft():
    try:
        import peft
    except ImportError:
        raise MinillmError(
            "student.lora.r is set, but peft is not installed: pip install -e '.[lora]'"
        ) from None
    return peft


def _adaptable_layers(model: nn.Module) -> list[str]:
    """The distinct last names of the model's linear layers (the names target_modules may use)."""
    from transformers.pytorch_utils import Conv1D

    return sorted(
        {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear | Conv1D)}
    )


def check_targets(model: nn.Module, target_modules) -> None:
    """Every name in ``student.lora.target_modules`` must name a module of the student, as peft matches
    them: the module's full name, or its name's last dotted parts (``q_proj``, ``self_attn.q_proj``)."""
    if isinstance(target_modules, str):
        return  # "all-linear" (checked by validate_config)
    names = [name for name, _ in model.named_modules() if name]
    for target in target_modules:
        if not any(name == target or name.endswith("." + target) for name in names):
            raise MinillmError(
                f"student.lora.target_modules: {target!r} names no module of the student "
                f"(its linear layers: {', '.join(_adaptable_layers(model))}; or use {ALL_LINEAR})"
            )


def apply_lora(model: nn.Module, lora, *, seed: int) -> nn.Module:
    """``model`` wrapped with LoRA adapters (``student.lora``: r, alpha, dropout, target_modules).

    The adapters' random init (peft's: A Kaiming-uniform, B zero, so the wrapped model starts equal to
    ``model``) is drawn from ``seed`` in a forked RNG: the same adapters for the same seed, and the
    run's global random stream is left as it was.
    """
    peft = _import_peft()
    targets = lora.target_modules
    targets = str(targets) if isinstance(targets, str) else [str(t) for t in targets]
    check_targets(model, targets)
    from transformers.pytorch_utils import Conv1D

    config = peft.LoraConfig(
        r=int(lora.r),
        lora_alpha=float(lora.alpha),
        lora_dropout=float(lora.dropout),
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
        # GPT-2's Conv1D stores its weight transposed (peft would warn and set this itself)
        fan_in_fan_out=any(isinstance(m, Conv1D) for m in model.modules()),
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        torch.manual_seed(seed)
        try:
            wrapped = peft.get_peft_model(model, config)
        except ValueError as err:  # e.g. a target that is a module peft cannot adapt
            first = str(err).splitlines()[0]
            raise MinillmError(f"student.lora.target_modules={targets}: {first}") from None
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    log.info("LoRA student: r=%s on %s, %d of %d parameters train", lora.r, targets, trainable, total)
    return wrapped


def export_student(model: nn.Module, tokenizer, folder: Path, lora) -> nn.Module:
    """Write the selected student to ``folder`` (``best_model/``) and return the model to evaluate.

    A full student is saved as it is. A LoRA student is either merged (``student.lora.export=merged``:
    the adapters folded into the weights, saved as the plain architecture; the merged model is returned)
    or saved as adapters plus base (``adapters``: ``folder`` is a peft adapter folder whose
    ``base_model_name_or_path`` points at ``folder/base``, the base model as loaded; the returned model
    is the base with the adapters read back from ``folder``, so the evaluation scores the export).
    The LoRA wrapper is consumed either way: use the returned model.
    """
    folder = Path(folder)
    if not is_lora(model):
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return model
    if str(lora.export) == "merged":
        merged = model.merge_and_unload()
        merged.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return merged
    peft = _import_peft()
    base_dir = folder / "base"
    model.peft_config["default"].base_model_name_or_path = str(base_dir.resolve())
    model.save_pretrained(folder)  # adapter_config.json, adapter_model.safetensors
    tokenizer.save_pretrained(folder)
    base = model.unload()  # the frozen weights as loaded, adapters removed
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    return peft.PeftModel.from_pretrained(base, str(folder))
