"""``teacher`` and ``student``: a model preset (conf/teacher/*.yaml, conf/student/*.yaml) fills these keys.

A preset names its model one way: ``path`` (a folder or hub id), ``arch`` (a transformers config to build from,
random init) or ``gguf`` (a packaged GGUF or a .gguf file, converted on first use); ``keep_every`` keeps every
k-th layer of a ``gguf`` model (minillm.models.prepare). The cross-key rules (path with arch, keep_every without
gguf) are in minillm.config and minillm.models.prepare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from minillm.schema.rules import at_least, checked, greater_than_zero, one_of, positive, within


@dataclass
class ModelConfig:
    name: str = MISSING  # the label of the model in logs and tables
    path: str | None = None  # a Hugging Face folder or hub id
    arch: Any = None  # a transformers config (model_type, sizes …) to build a random-init model from
    gguf: str | None = None  # a packaged GGUF (minillm/models/gguf.py PACKAGED) or a .gguf file
    keep_every: int | None = at_least(
        None, 2, "must be an integer >= 2 (every k-th layer), or null"
    )  # keep every k-th layer of the gguf model: 0, k, 2k, …


def _targets_ok(value) -> bool:
    if isinstance(value, str):
        return value == "all-linear"
    return len(value) > 0 and all(isinstance(t, str) and t for t in value)


@dataclass
class LoraConfig:
    """LoRA adapters on any student preset (peft, the `lora` extra): `student.lora.r=8` trains only rank-8
    adapters on the frozen student, and checkpoints hold only the adapters."""

    r: int | None = positive(None, "must be a positive integer (null: no LoRA)")  # null: every weight trains
    alpha: float = greater_than_zero(
        16, "must be a number > 0"
    )  # the adapters' output is scaled by alpha / r
    # dropout on the adapters' input (MiniLLM's updates run in eval mode without dropout unless
    # objective.disable_dropout=false)
    dropout: float = within(0.0, 0, 1, high_open=True)
    # every linear layer but the output head (all-linear), or a list of names: [q_proj, v_proj]
    target_modules: Any = checked(
        "all-linear", _targets_ok, "use all-linear or a non-empty list of module names"
    )
    # best_model/: merged into a plain Hugging Face model | adapters (a peft adapter folder, the unmerged base
    # model in best_model/base/)
    export: str = one_of("merged", "merged", "adapters")


@dataclass
class StudentConfig(ModelConfig):
    lora: LoraConfig = field(default_factory=LoraConfig)
