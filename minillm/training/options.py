"""The MiniLLM round's options, read from the ``objective`` and ``optim`` config groups.

Training (``OnPolicyModule``) and ``make bench`` build them with the same functions, so a key means the
same thing to both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from minillm.errors import MinillmError
from minillm.objectives.policy_gradient import PGOptions
from minillm.rollout.options import SamplingOptions

VARIANTS = ("code", "paper")
ALPHA_SCHEDULES = ("constant", "cosine", "linear")
# The round's keys that name one of a few choices, with the value an objective without the key means.
ROUND_CHOICES = {"variant": (VARIANTS, "code"), "alpha_schedule": (ALPHA_SCHEDULES, "constant")}
PG_KEYS = (
    "gamma",
    "include_current",
    "length_norm",
    "whiten",
    "reward_scale",
    "reward_clip",
    "clip_eps",
    "single_step",
    "single_step_weighted",
    "ratio_weighted",
)


def round_choice(objective_cfg, key: str) -> str:
    """``objective.<key>`` (variant, alpha_schedule), checked against its choices: the one validator of
    both, used by the config check before any model loads and by the code that reads them."""
    choices, default = ROUND_CHOICES[key]
    value = objective_cfg.get(key)
    value = default if value is None else value
    if value not in choices:
        raise MinillmError(f"objective.{key}={value!r}; choose one of {list(choices)}")
    return value


def check_round_choices(objective_cfg) -> None:
    """Every key of ``ROUND_CHOICES`` that the objective sets is one of its choices."""
    for key in ROUND_CHOICES:
        if key in objective_cfg:
            round_choice(objective_cfg, key)


def pg_options(objective_cfg) -> PGOptions:
    """The estimator's options: the ``variant`` preset, then any key the config sets explicitly."""
    variant = round_choice(objective_cfg, "variant")
    single_step = bool(objective_cfg.get("single_step", True))
    base = PGOptions.code() if variant == "code" else PGOptions.paper(single_step=single_step)
    values = {k: getattr(base, k) for k in PG_KEYS}
    for key in PG_KEYS:
        if objective_cfg.get(key) is not None:
            values[key] = objective_cfg[key]
    try:
        return PGOptions(**values)
    except MinillmError as err:
        raise MinillmError(str(err).replace("PGOptions.", "objective.")) from None


def alpha_at(objective_cfg, progress: float) -> float:
    """Teacher-mix α at training progress in [0, 1]: constant, linear or cosine from α to alpha_end."""
    start = float(objective_cfg.teacher_mix_alpha)
    end = float(
        objective_cfg.get("alpha_end", start) if objective_cfg.get("alpha_end") is not None else start
    )
    schedule = round_choice(objective_cfg, "alpha_schedule")
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return start + (end - start) * progress
    if schedule == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return start  # constant


@dataclass(frozen=True)
class RoundOptions:
    """What one round does besides its models, optimizer and α (``objective.*`` unless said otherwise)."""

    mini_batch_size: int  # rollouts per optimizer step
    ppo_epochs: int  # passes over the round's rollouts
    # how rollouts are sampled (max_new_tokens, temperature, top-k, top-p, the tokenizer's EOS and pad);
    # teacher_mix_alpha stays 0 here: each round samples at its own α (alpha_at), set by MiniLLMRound.start
    sampling: SamplingOptions
    pg: PGOptions = field(default_factory=PGOptions.code)  # the estimator (variant preset + overrides)
    # keep the teacher's distributions from the rollout (objective.cache_teacher_logits, within
    # objective.teacher_cache_mb); False: one teacher pass per minibatch for the single-step term
    keep_teacher_logits: bool = True
    # at α = 0: the student decodes alone and one teacher pass scores the responses (training always);
    # False decodes the teacher in lockstep anyway (make bench times both)
    teacher_after_decoding: bool = True
    disable_dropout: bool = True  # the updates run the student in eval mode
    grad_clip: float | None = None  # the config's grad_clip (global norm); None or 0: no clipping
    pt_coef: float = 0.0  # weight of L_PT (the round needs a pre-training loss callable when > 0)
    chunk_size: int | None = None  # positions per chunk of the full-vocabulary terms; None: one pass
    # the old log-probs of the PPO ratio (and the rewards' log q) from a teacher-forced pass over each
    # minibatch of the first inner epoch, the updates' own path, instead of the decoding's: the first
    # step's ratio is then exactly 1 at any precision. On under mixed precision (bf16 decoding and the
    # teacher-forced pass differ by bf16 rounding); off in fp32, where they differ by float rounding
    # only (~1e-6) and one student pass per round is saved
    rescore_old_logprobs: bool = False
    # the student's teacher-forced pass and the loss of each update under torch.compile (fit.compile_updates;
    # minillm.training.update_passes)
    compile_updates: bool = False

    @classmethod
    def from_config(
        cls,
        objective_cfg,
        *,
        grad_clip: float | None,
        eos_token_id: int | None,
        pad_token_id: int,
        keep_teacher_logits: bool,
        mixed_precision: bool = False,
        compile_updates: bool = False,
    ) -> RoundOptions:
        return cls(
            mini_batch_size=int(objective_cfg.mini_batch_size),
            ppo_epochs=int(objective_cfg.ppo_epochs),
            sampling=SamplingOptions.from_config(
                objective_cfg, eos_token_id=eos_token_id, pad_token_id=pad_token_id
            ),
            pg=pg_options(objective_cfg),
            keep_teacher_logits=keep_teacher_logits,
            disable_dropout=bool(objective_cfg.get("disable_dropout", True)),
            grad_clip=grad_clip,
            pt_coef=float(objective_cfg.get("pt_coef", 0.0) or 0.0),
            chunk_size=objective_cfg.get("chunk_size"),
            rescore_old_logprobs=mixed_precision,
            compile_updates=compile_updates,
        )


def teacher_cache_mib(num_rollouts: int, max_new_tokens: int, teacher) -> float:
    """MiB of one round's kept teacher distributions: num_rollouts × max_new_tokens × vocabulary, in the
    dtype of the teacher's output layer."""
    head = teacher.get_output_embeddings().weight
    return num_rollouts * max_new_tokens * head.shape[0] * head.element_size() / 2**20


def keep_teacher_logits(objective_cfg, teacher) -> tuple[bool, float]:
    """Whether the round keeps the teacher's distributions from the rollout: ``objective.cache_teacher_logits``
    and the round's logits fit ``objective.teacher_cache_mb`` (null: no limit). Returns (keep, MiB needed)."""
    need_mib = teacher_cache_mib(int(objective_cfg.num_rollouts), int(objective_cfg.max_new_tokens), teacher)
    if not objective_cfg.get("cache_teacher_logits", True):
        return False, need_mib
    budget = objective_cfg.get("teacher_cache_mb")
    return budget is None or need_mib <= float(budget), need_mib
