"""What one timed round runs (``StepSettings``, from the composed ``objective`` and ``optim`` groups) and
where it runs (``Runtime``: device, precision, compile)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
from omegaconf import DictConfig

from minillm.errors import MinillmError
from minillm.training.options import RoundOptions, keep_teacher_logits
from minillm.training.precision import bf16_supported

# Bench's own keys of before it composed the run's model groups, and what replaced each.
RENAMED_KEYS = {
    "teacher_path": "teacher=… (a preset of conf/teacher/) / teacher.path=…",
    "student_path": "student=… (a preset of conf/student/) / student.path=…",
    "tokenizer_path": "tokenizer.path=…",
    "vocab_size": "tokenizer.vocab_size=…",
    "threads": "fit.num_threads=…",
    "random_init_fallback": (
        "teacher=tiny_llama / student=tiny_llama for a random init (a missing model folder is an error, "
        "as in a run)"
    ),
}


def refuse_renamed_keys(overrides: list[str]) -> None:
    """An override of a key bench no longer has (``teacher_path=…``) fails in one line naming its new key."""
    for arg in overrides:
        key = arg.split("=", 1)[0].lstrip("+~")
        if key in RENAMED_KEYS:
            raise MinillmError(f"{arg}: bench takes the run's keys; use {RENAMED_KEYS[key]}")


def positive(node, key: str, name: str | None = None) -> int:
    """``node[key]`` as a positive integer, else an error naming ``name`` (default: ``key``)."""
    value = node.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise MinillmError(f"{name or key}={value!r}: must be a positive integer")
    return value


@dataclass(frozen=True)
class StepSettings:
    """One timed round: the prompts' shape, α, and the round's options as training builds them."""

    batch_size: int  # rollouts per round (objective.num_rollouts)
    prompt_len: int
    response_len: int  # every row decodes exactly this many tokens (= round.sampling.max_new_tokens)
    alpha: float  # teacher-mix α of the rollout (objective.teacher_mix_alpha)
    pg_term: bool  # False: the single-step term (token reverse KL) alone, as GKD
    round: RoundOptions  # objective.* and grad_clip, as OnPolicyModule reads them

    def __post_init__(self) -> None:
        if self.round.sampling.max_new_tokens != self.response_len:
            raise ValueError("StepSettings: round.sampling.max_new_tokens must equal response_len")

    @property
    def generated_tokens(self) -> int:
        return self.batch_size * self.response_len

    def resized(self, *, batch_size: int, response_len: int) -> StepSettings:
        """The same round on another batch size and response length (minibatch size unchanged)."""
        return replace(
            self,
            batch_size=batch_size,
            response_len=response_len,
            round=replace(self.round, sampling=replace(self.round.sampling, max_new_tokens=response_len)),
        )

    def with_round(self, **changes) -> StepSettings:
        return replace(self, round=replace(self.round, **changes))

    def needed_tokens(self) -> dict[str, int]:
        """Forward tokens the algorithm needs per round.

        Teacher: every prompt token and every response token but the last (whose next-token
        distribution nobody uses), once, in the rollout. Student: the same in the rollout, plus one
        teacher-forced pass over prompt + response per row per inner epoch, and one more to score the old
        log-probs under mixed precision (``round.rescore_old_logprobs``).
        """
        rollout = self.batch_size * (self.prompt_len + self.response_len - 1)
        per_epoch = self.batch_size * (self.prompt_len + self.response_len)
        passes = self.round.ppo_epochs + int(self.round.rescore_old_logprobs)
        return {"teacher": rollout, "student": rollout + passes * per_epoch}

    def alpha0_needed_tokens(self, *, engine: bool) -> dict[str, int]:
        """Forward tokens of the trainer's own models in an α = 0 round (``sampler=hf`` or, ``engine``,
        ``sampler=vllm``). Teacher: one pass over prompt + response scores the finished rollout. Student:
        the rollout, then one teacher-forced pass per inner epoch (and the mixed-precision rescoring). The
        rollout is our decoder's steps (every token but the last) with ``sampler=hf``; with the engine it is
        the trainer's no-grad pass over what the engine sampled (the log-probs every loss reads), one whole
        prompt + response per row. The engine's own decoding runs in another process and is not counted.
        """
        per_pass = self.batch_size * (self.prompt_len + self.response_len)
        rollout = per_pass if engine else self.batch_size * (self.prompt_len + self.response_len - 1)
        passes = self.round.ppo_epochs + int(self.round.rescore_old_logprobs)
        return {"teacher": per_pass, "student": rollout + passes * per_pass}


def check_on_policy(cfg: DictConfig) -> None:
    """Bench times the on-policy round: refuse another objective before any model is loaded."""
    obj = cfg.objective
    if "OnPolicyModule" not in str((obj.get("module") or {}).get("_target_", "")):
        raise MinillmError(
            f"objective={obj.get('name')}: make bench times the on-policy round; use objective=reverse_kld"
        )


def step_settings(cfg: DictConfig, teacher: torch.nn.Module, eos_token_id: int) -> StepSettings:
    """The main round: ``objective.*`` (``num_rollouts``, ``mini_batch_size``, ``ppo_epochs``,
    ``teacher_mix_alpha``, ``cache_teacher_logits`` within ``teacher_cache_mb``, ``variant`` and the
    estimator's keys, ``temperature``, ``chunk_size``, ``disable_dropout``), ``grad_clip``, and bench's
    own ``prompt_len``, ``response_len`` and ``pg_term``. Rows never stop at EOS (fixed lengths)."""
    check_on_policy(cfg)
    obj = cfg.objective
    batch_size = positive(obj, "num_rollouts", "objective.num_rollouts")
    positive(obj, "mini_batch_size", "objective.mini_batch_size")
    positive(obj, "ppo_epochs", "objective.ppo_epochs")
    response_len = positive(cfg, "response_len")
    if obj.max_new_tokens != response_len:
        raise MinillmError(
            f"objective.max_new_tokens={obj.max_new_tokens}: make bench decodes exactly response_len="
            f"{response_len} tokens per row; set response_len instead"
        )
    alpha = float(obj.teacher_mix_alpha)
    if not 0.0 <= alpha <= 1.0:
        raise MinillmError(f"objective.teacher_mix_alpha={alpha}: must lie in [0, 1]")
    if float(obj.get("pt_coef", 0.0) or 0.0) > 0:
        raise MinillmError(
            f"objective.pt_coef={obj.pt_coef}: make bench times the round without L_PT (it has no "
            "pre-training text); set objective.pt_coef=0"
        )
    keep, _ = keep_teacher_logits(obj, teacher)
    options = RoundOptions.from_config(
        obj,
        grad_clip=cfg.get("grad_clip"),
        eos_token_id=None,
        pad_token_id=eos_token_id,
        keep_teacher_logits=keep,
        mixed_precision=cfg.dtype == "bf16",
    )
    return StepSettings(
        batch_size=batch_size,
        prompt_len=positive(cfg, "prompt_len"),
        response_len=response_len,
        alpha=alpha,
        pg_term=bool(cfg.pg_term),
        round=options,
    )


def gkd_settings(main: StepSettings) -> StepSettings:
    """GKD's step on our machinery: α = 0, one update per batch, the token reverse KL alone, the teacher
    decoding in lockstep (``gkd_one_pass`` scores with one teacher pass instead, as training does at α = 0)."""
    return replace(main, alpha=0.0, pg_term=False).with_round(
        ppo_epochs=1,
        mini_batch_size=main.batch_size,
        keep_teacher_logits=True,
        teacher_after_decoding=False,
        rescore_old_logprobs=False,  # its loss never reads the old log-probs (no PPO ratio)
    )


def gkd_one_pass(main: StepSettings) -> StepSettings:
    """The GKD-equivalent round as training runs it at α = 0: the student decodes alone, then one teacher
    pass scores the responses."""
    return gkd_settings(main).with_round(teacher_after_decoding=True)


@dataclass
class Runtime:
    """Where and how the models run; ``autocast()`` wraps every timed region (Lightning's precision
    plugin does this in training)."""

    device: torch.device
    dtype: str  # fp32 | bf16
    compile: bool

    def autocast(self):
        if self.dtype == "bf16":
            # as Lightning's precision plugin: no cache of cast weights (a round's updates change them in place)
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, cache_enabled=False)
        return contextlib.nullcontext()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def make_runtime(cfg: DictConfig) -> Runtime:
    device = str(cfg.device)
    if device not in ("cpu", "cuda"):
        raise MinillmError(f"device={device!r}: choose one of ['cpu', 'cuda']")
    if cfg.dtype not in ("fp32", "bf16"):
        raise MinillmError(f"dtype={cfg.dtype!r}: choose one of ['bf16', 'fp32']")
    if device == "cuda" and not torch.cuda.is_available():
        raise MinillmError(
            "device=cuda: no CUDA device is available here (torch.cuda.is_available() is False)"
        )
    if (cfg.get("objective") or {}).get("compile_decode"):
        raise MinillmError(
            "objective.compile_decode=true: the benchmark does not read it; its switch for the same wrappers is "
            "compile=true (device=cuda), and pairs.decode / pairs.fast_path time sampler.decode=compiled"
        )
    if device != "cuda" and bool(cfg.compile):
        raise MinillmError(
            "compile=true: part of the CUDA path; it needs device=cuda and a CUDA device (on CPU use compile=false)"
        )
    if cfg.dtype == "bf16" and not bf16_supported(device):
        raise MinillmError(
            f"dtype=bf16: this {device} has no native bf16 (AVX512-BF16 / AMX on CPU); use dtype=fp32"
        )
    return Runtime(device=torch.device(device), dtype=str(cfg.dtype), compile=bool(cfg.compile))
