"""The typed schema of the config's fixed nodes (``fit``, ``resume``, ``select``, ``tokenizer``, ``eval``),
registered in Hydra's ConfigStore and named first in ``conf/config.yaml``'s defaults list.

Each dataclass is the one home of its keys: the type, the default and what the key does. A node built from
a dataclass is in struct mode, so Hydra's composition itself refuses a key the node does not have (set with
``+``, or by an experiment or arm file) and a value of the wrong type, before any code runs; minillm.cli
turns that refusal into one line naming the key. Ranges and the rules between keys stay in
minillm.config.validate_config. Groups with several choices (objective, data, teacher, …) are checked by
minillm.config.check_unread_keys; ``optim``, ``scheduler``, ``callbacks``, ``strategy`` and ``trainer`` are
the arguments of the object their ``_target_`` names and are checked as it is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FitConfig:
    """How the run is carried out, beside the lightning.Trainer arguments of ``trainer``."""

    num_threads: int | None = None  # torch CPU threads (None: torch's default)
    max_bad_steps: int = 5  # consecutive non-finite updates skipped before the run stops with a checkpoint
    stop_at_step: int | None = (
        None  # pause here as if signalled: checkpoint, exit 0; resume with ckpt_path=last
    )
    cpu_offload: bool = (
        False  # strategy=fsdp: keep the student's and the teacher's shards in CPU memory between uses
    )
    # the frozen teacher's weights: auto = the half type of a bf16/fp16 mixed precision (CUDA), else as
    # loaded (fp32); or fp32 | bf16 | fp16
    teacher_dtype: str | None = "auto"


@dataclass
class ResumeConfig:
    # resume a checkpoint trained with another value of a key that changes training (said, not refused)
    allow_config_change: bool = False


@dataclass
class SelectConfig:
    """Checkpoint selection during training: the metric and whether larger is better (an objective may set
    its own: objective=reverse_kld selects by val/rougeL, max)."""

    monitor: str = "val/loss"
    mode: str = "min"  # min | max
    save_hf: bool = True  # also export the selected student as a Hugging Face folder (best_model/)


@dataclass
class TokenizerConfig:
    # None: the student's (or teacher's) own tokenizer folder. For models built from `arch`, a byte-level
    # BPE of `vocab_size` is trained on the train split and cached.
    path: str | None = None
    # A GGUF model whose tokenizer to use (converted into cache_dir/models on first use, as teacher.gguf):
    # student=smollm2_narrow sets it, a student built from arch with SmolLM2's vocabulary.
    gguf: str | None = None
    vocab_size: int = 2048


@dataclass
class EvalCallbacksConfig:
    """Cheap behaviour metrics during training on a fixed slice of the valid split (docs/evaluation.md):
    val/exaccerr (needs a loaded teacher), val/ece + val/label_acc, val/distinct4. Any can be select.monitor
    (e.g. select.monitor=val/ece select.mode=min)."""

    enabled: bool = False
    every_n_val: int = 1  # compute on every N-th validation run
    metrics: list[str] = field(default_factory=lambda: ["exaccerr", "ece", "distinct4"])
    n_prompts: int = 16  # first valid prompts, for ExAccErr and Distinct-4
    samples_per_prompt: int = 2  # ExAccErr samples per prompt, from the student and from the teacher
    max_new_tokens: int = 32
    n_calibration: int = 32  # first classification records of the valid split, for ECE
    bins: int = 10
    batch_size: int = 32
    seed: int = 0


@dataclass
class EvalConfig:
    """The evaluation after training (and the validation generations during it)."""

    splits: list[str] = field(default_factory=lambda: ["test"])
    num_samples: int | None = None  # None: the whole split
    batch_size: int = 64
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seeds: list[int] = field(default_factory=lambda: [0])
    compare: bool = True  # evaluate the teacher and the student init too and print a table
    val_samples: int = 128  # validation generations per validation run (for val/rougeL)
    callbacks: EvalCallbacksConfig = field(default_factory=EvalCallbacksConfig)


# node name in the config -> its schema; each is stored as schema/<node> with the node as its package
NODES = {
    "fit": FitConfig,
    "resume": ResumeConfig,
    "select": SelectConfig,
    "tokenizer": TokenizerConfig,
    "eval": EvalConfig,
}


def register() -> None:
    """Store every schema in Hydra's ConfigStore (``schema/fit`` … at package ``fit`` …); idempotent."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for node, schema in NODES.items():
        store.store(group="schema", name=node, node=schema, package=node)


def schema_of(node_path: str):
    """The dataclass whose schema holds ``node_path`` (``eval.callbacks`` -> EvalCallbacksConfig), or None."""
    head, *rest = node_path.split(".")
    schema = NODES.get(head)
    for part in rest:
        fields = getattr(schema, "__dataclass_fields__", {})
        if part not in fields:
            return None
        default = fields[part].default_factory  # nested nodes are built by a factory
        schema = default if isinstance(default, type) else None
    return schema
