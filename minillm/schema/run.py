"""The nodes every run has, whatever its group choices: ``fit``, ``resume``, ``select``, ``tokenizer``, ``eval``."""

from __future__ import annotations

from dataclasses import dataclass, field

from minillm.schema.rules import at_least, checked, non_negative, one_of, positive


@dataclass
class FitConfig:
    """How the run is carried out, beside the lightning.Trainer arguments of ``trainer``."""

    num_threads: int | None = positive(None)  # torch CPU threads (None: torch's default)
    # consecutive non-finite updates skipped before the run stops with a checkpoint
    max_bad_steps: int = positive(5)
    # pause here as if signalled: checkpoint, exit 0; resume with ckpt_path=last
    stop_at_step: int | None = at_least(None, 0, "must be a step number >= 0 or null")
    # strategy=fsdp: keep the student's and the teacher's shards in CPU memory between uses
    cpu_offload: bool = False
    # the frozen teacher's weights: auto = the half type of a bf16/fp16 mixed precision (CUDA), else as
    # loaded (fp32); or fp32 | bf16 | fp16
    teacher_dtype: str | None = one_of("auto", "auto", "fp32", "bf16", "fp16")
    # on-policy objectives: the student's teacher-forced pass and the loss of every update under torch.compile
    # (minillm.training.update_passes; eager, said in one logged line, where compiling fails or with several
    # processes). Seconds of compiling per process before it gains (README: "Speed")
    compile_updates: bool = False


@dataclass
class ResumeConfig:
    # resume a checkpoint trained with another value of a key that changes training (said, not refused)
    allow_config_change: bool = False


@dataclass
class SelectConfig:
    """Checkpoint selection during training: the metric and whether larger is better (an objective sets its
    own: objective=reverse_kld selects by val/rougeL, max)."""

    monitor: str = "val/loss"
    mode: str = one_of("min", "min", "max")
    save_hf: bool = True  # also export the selected student as a Hugging Face folder (best_model/)


@dataclass
class TokenizerConfig:
    # None: the student's (or teacher's) own tokenizer folder. For models built from `arch`, a byte-level
    # BPE of `vocab_size` is trained on the train split and cached.
    path: str | None = None
    # A GGUF model whose tokenizer to use (converted into cache_dir/models on first use, as teacher.gguf):
    # student=smollm2_narrow sets it, a student built from arch with SmolLM2's vocabulary.
    gguf: str | None = None
    vocab_size: int = positive(2048)


@dataclass
class EvalCallbacksConfig:
    """Cheap behaviour metrics during training on a fixed slice of the valid split (docs/evaluation.md):
    val/exaccerr (needs a loaded teacher), val/ece + val/label_acc, val/distinct4. Any can be select.monitor
    (e.g. select.monitor=val/ece select.mode=min)."""

    enabled: bool = False
    every_n_val: int = positive(1)  # compute on every N-th validation run
    metrics: list[str] = field(default_factory=lambda: ["exaccerr", "ece", "distinct4"])
    n_prompts: int = positive(16)  # first valid prompts, for ExAccErr and Distinct-4
    samples_per_prompt: int = positive(
        2
    )  # ExAccErr samples per prompt, from the student and from the teacher
    max_new_tokens: int = positive(32)
    n_calibration: int = positive(32)  # first classification records of the valid split, for ECE
    bins: int = positive(10)
    batch_size: int = positive(32)
    seed: int = 0


@dataclass
class EvalConfig:
    """The evaluation after training (and the validation generations during it)."""

    splits: list[str] = field(default_factory=lambda: ["test"])
    num_samples: int | None = None  # None: the whole split
    batch_size: int = positive(64)
    max_new_tokens: int = positive(128)
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seeds: list[int] = checked(
        None, lambda v: len(v) > 0, "give at least one sampling seed", factory=lambda: [0]
    )
    compare: bool = True  # evaluate the teacher and the student init too and print a table
    val_samples: int = non_negative(128)  # validation generations per validation run (val/rougeL; 0: none)
    callbacks: EvalCallbacksConfig = field(default_factory=EvalCallbacksConfig)
