"""``objective``: one schema per choice (objective=sft, reverse_kld, …), each the home of its keys, defaults and
ranges. Each conf/objective/<name>.yaml names its schema first in its defaults list (``/schema/objective@objective:
<name>``) and sets, in the other groups, what the method needs there (optim.lr, select.monitor, …).

Rules between keys (a divergence's parameters, t_start <= t_end) are in minillm.config; variant and
alpha_schedule in minillm.training.options.round_choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from minillm.schema.rules import greater_than_zero, non_negative, one_of, positive, within

EVAL_LENGTH = "${eval.max_new_tokens}"


def _target(path: str, **arguments):
    """A ``module`` or ``loss`` node: ``_target_`` (partial) and its arguments, often ``${..key}`` of the
    objective."""
    return field(default_factory=lambda: {"_target_": path, "_partial_": True, **arguments})


def _from_objective(*names: str) -> dict:
    return {name: f"${{..{name}}}" for name in names}


def _unit(default):
    return within(default, 0.0, 1.0)


def _sampling_temperature(default):
    return non_negative(default)


# --- supervised: SFT, word-level KD, SeqKD ---------------------------------------------------------------


@dataclass
class SftObjective:
    """Supervised fine-tuning on gold responses ("SFT w/o KD"): cross-entropy on response tokens and EOS."""

    name: str = "sft"
    # the LightningModule that trains it, completed in code with the models, tokenizer and data
    module: Any = _target("minillm.training.supervised.SupervisedModule")
    # a pure function of minillm.objectives: (student logits, labels, teacher logits) -> (loss, logs)
    loss: Any = _target("minillm.objectives.supervised.supervised_loss", **_from_objective("kd_ratio"))
    kd_ratio: float = _unit(0.0)  # (1 − kd_ratio)·CE + kd_ratio·KL(p‖q)


@dataclass
class ForwardKldObjective(SftObjective):
    """The paper's "KD" baseline: word-level forward KL to the teacher on gold data."""

    name: str = "forward_kld"
    loss: Any = _target(
        "minillm.objectives.supervised.supervised_loss", **_from_objective("kd_ratio", "chunk_size")
    )
    kd_ratio: float = _unit(0.5)
    # positions per chunk of the full-vocabulary KL: flat peak memory, same numbers (null: one pass)
    chunk_size: int | None = positive(None)


@dataclass
class HintonKdObjective(SftObjective):
    """Word-level KD at a temperature τ (Hinton et al., 2015): (1 − kd_ratio)·CE + kd_ratio·τ²·KL(p_τ‖q_τ)."""

    name: str = "hinton_kd"
    loss: Any = _target(
        "minillm.objectives.supervised.temperature_kd_loss", **_from_objective("kd_ratio", "temperature")
    )
    needs_teacher: bool = True
    kd_ratio: float = _unit(0.5)
    temperature: float = _sampling_temperature(2.0)


@dataclass
class SeqKdObjective(ForwardKldObjective):
    """SeqKD: SFT on the teacher's cached samples (kd_ratio > 0 adds word-level KD on the same text)."""

    name: str = "seqkd"
    kd_ratio: float = _unit(0.0)
    needs_teacher: bool = True
    train_on_teacher_samples: bool = True  # the training responses are replaced by the teacher's
    temperature: float = _sampling_temperature(1.0)
    max_new_tokens: int = positive(128)
    batch_size: int = positive(64)  # prompts per sampling batch
    seed: int = 0  # sampling seed of the teacher's responses (part of the cache key)


# --- token-level divergences: token_kd, gkd, distillm, distillm2, taid -----------------------------------


@dataclass
class TokenKdObjective:
    """Token-level distillation with any divergence of minillm/objectives/divergences.py (README "Beyond the
    paper"): gold responses, the teacher's samples, the student's, or a mix (GKD)."""

    name: str = "token_kd"
    module: Any = _target("minillm.training.token_kd.TokenKDModule")
    loss: Any = _target(
        "minillm.objectives.token_kd.token_kd_loss",
        **_from_objective("divergence", "alpha", "beta", "mu", "teacher_top_k", "chunk_size"),
    )
    needs_teacher: bool = True
    # forward_kl | reverse_kl | jsd | skew_forward_kl | skew_reverse_kl | tvd | ab_divergence | akl
    divergence: str = "forward_kl"
    # The divergence's parameters (null: its default; one it does not take is refused): jsd beta (0.5);
    # skew_forward_kl / skew_reverse_kl alpha (0.1); ab_divergence alpha and beta (0.5, 0.5); akl mu (0.5).
    alpha: float | None = None
    beta: float | None = None
    mu: float | None = None
    # k: only the teacher's top-k log-probs per position plus one bucket for the rest
    teacher_top_k: int | None = positive(None)
    # positions per chunk of the full-vocabulary divergence (less memory, same numbers)
    chunk_size: int | None = positive(None)
    on_policy_fraction: float = _unit(0.0)  # λ: the probability that a batch's responses are the student's
    train_on_teacher_samples: bool = False  # true: the off-policy responses are the teacher's cached samples
    # Sampling: the student's on-policy responses and (train_on_teacher_samples) the teacher's cached ones.
    temperature: float = _sampling_temperature(1.0)
    max_new_tokens: int = positive(EVAL_LENGTH)
    batch_size: int = positive(64)  # teacher samples: prompts per sampling batch (as objective=seqkd)
    seed: int = 0  # teacher samples: sampling seed (part of the cache key, as objective=seqkd)


@dataclass
class GkdObjective(TokenKdObjective):
    """GKD (Agarwal et al., ICLR 2024): generalized JSD(β) on the student's own samples with probability λ."""

    name: str = "gkd"
    divergence: str = "jsd"
    beta: float | None = 0.1
    on_policy_fraction: float = _unit(0.5)


@dataclass
class DistillmObjective:
    """DistiLLM (Ko et al., ICML 2024): skew KL with its adaptive off-policy schedule and replay buffer."""

    name: str = "distillm"
    module: Any = _target("minillm.training.distillm.DistillmModule")
    loss: Any = _target(
        "minillm.objectives.token_kd.token_kd_loss",
        **_from_objective("divergence", "alpha", "teacher_top_k", "chunk_size"),
    )
    needs_teacher: bool = True
    divergence: str = "skew_forward_kl"  # skew_forward_kl (SKL) | skew_reverse_kl (SRKL)
    alpha: float | None = 0.1  # the skew α
    teacher_top_k: int | None = positive(None)
    chunk_size: int | None = positive(None)
    init_threshold: float = _unit(0.0)  # φ at the start
    threshold_step: float = _unit(0.1)  # φ's rise at a validation whose loss rose by >= loss_eps
    loss_eps: float = non_negative(0.1)
    replay_capacity: int = positive(1000)  # student-generated examples kept (the oldest leave first)
    # steps the fresh/replay split decays over (null: the run's max_steps or estimate)
    schedule_steps: int | None = positive(None)
    temperature: float = _sampling_temperature(1.0)
    max_new_tokens: int = positive(EVAL_LENGTH)


@dataclass
class Distillm2Objective:
    """DistiLLM-2 (Ko et al., ICML 2025): skew forward KL on a teacher response plus skew reverse KL on a
    student response to the same prompt."""

    name: str = "distillm2"
    module: Any = _target("minillm.training.distillm.Distillm2Module")
    loss: Any = _target(
        "minillm.objectives.distillm2.distillm2_loss", **_from_objective("alpha", "normalize", "chunk_size")
    )
    needs_teacher: bool = True
    alpha: float = _unit(0.1)  # the skew α of both terms
    # token (mean over the set's response tokens) | sequence (the released code)
    normalize: str = one_of("token", "sequence", "token")
    chunk_size: int | None = positive(None)
    student_responses: str = one_of(
        "epoch", "batch", "epoch"
    )  # epoch (offline, every epoch) | batch (on-policy)
    train_on_teacher_samples: bool = True  # the teacher side: its cached samples (false: the gold responses)
    temperature: float = _sampling_temperature(0.8)  # both the teacher's and the student's samples
    # both sides' nucleus cut (1: off; 0.95: the released code)
    top_p: float = within(1.0, 0.0, 1.0, low_open=True, text="must be in (0, 1] (1: no nucleus cut)")
    max_new_tokens: int = positive(EVAL_LENGTH)
    # prompts per sampling batch (teacher samples and the epoch's student samples)
    batch_size: int = positive(64)
    seed: int = 0  # the teacher samples' sampling seed (part of SeqKD's cache key)


@dataclass
class TaidObjective:
    """TAID (Shing et al., ICLR 2025): forward KL to an interpolation of the student and the teacher whose
    weight t rises from t_start to t_end."""

    name: str = "taid"
    module: Any = _target("minillm.training.taid.TaidModule")
    loss: Any = _target("minillm.objectives.taid.taid_loss", **_from_objective("chunk_size"))
    needs_teacher: bool = True
    t_start: float = _unit(0.4)
    t_end: float = _unit(1.0)
    t_alpha: float = non_negative(5.0e-4)  # step size of the adaptive update
    t_momentum: float = within(0.99, 0, 1, high_open=True)  # momentum of the loss's relative decrease
    # steps of the linear ramp (null: the run's max_steps or estimate; set it under max_time)
    schedule_steps: int | None = positive(None)
    chunk_size: int | None = positive(None)


# --- MiniLLM: reverse-KL policy gradient --------------------------------------------------------------------


@dataclass
class ReverseKldObjective:
    """MiniLLM: reverse-KL on-policy distillation with teacher-mixed rollouts (Gu et al., 2306.08543).
    ``variant=code`` (default) follows the authors' released code, ``variant=paper`` the printed equations;
    an estimator key set to a value overrides the variant's (null keeps the variant's value)."""

    name: str = "reverse_kld"
    # the LightningModule that runs the rounds (the loss: minillm.objectives.policy_gradient)
    module: Any = _target("minillm.training.on_policy.OnPolicyModule")
    needs_teacher: bool = True
    variant: str = "code"  # code | paper
    # rollouts
    num_rollouts: int = positive("${data.batch_size}")  # prompts per round (paper: 256)
    mini_batch_size: int = positive(8)  # rollouts per optimizer step (paper: 64)
    ppo_epochs: int = positive(4)  # passes over each round
    max_new_tokens: int = positive(EVAL_LENGTH)
    temperature: float = _sampling_temperature(1.0)
    top_k: int = non_negative(0)
    top_p: float = within(1.0, 0.0, 1.0, low_open=True, text="must be in (0, 1] (1: no nucleus cut)")
    # α of p̃ = α·p + (1−α)·q (0 = plain student sampling). Any, not float: a sweep's 0 stays 0 in the run
    # names it interpolates (experiment=alpha_sweep: alpha0-s0); the rule still wants a number in [0, 1].
    teacher_mix_alpha: Any = _unit(0.2)
    alpha_schedule: str = "constant"  # constant | linear | cosine (from teacher_mix_alpha to alpha_end)
    alpha_end: float | None = _unit(None)
    # optimizer steps the schedule spans (null: the whole run; set it when the run is bounded by
    # trainer.max_time, or the schedule never gets going)
    alpha_steps: int | None = positive(None)
    cache_teacher_logits: bool = True  # keep the teacher's distributions from the rollout: no second pass
    # ...when the round's logits (num_rollouts × max_new_tokens × vocab) fit; else one teacher pass per
    # minibatch (null: no limit)
    teacher_cache_mb: float | None = non_negative(2048, "must be a size in MiB >= 0, or null")
    # positions per chunk of the full-vocabulary terms: flat peak memory for large vocabularies, same numbers
    # (null: one pass)
    chunk_size: int | None = positive(None)
    # estimator (null = the variant's value; see minillm/objectives/policy_gradient.py PGOptions)
    single_step: bool = True
    length_norm: str | None = None  # none | summed (paper) | remaining (code)
    gamma: float | None = None  # code 0.95, paper 1.0
    include_current: bool | None = None
    whiten: bool | None = None
    reward_scale: float | None = None
    reward_clip: float | None = None
    clip_eps: float | None = greater_than_zero(None)
    single_step_weighted: bool | None = None
    ratio_weighted: bool | None = None
    # pre-training term L_PT: L = L_MiniLLM + pt_coef · L_PT. The paper uses 1.0 with OpenWebText; off by
    # default here because on the embedded default the off-domain pydoc text competes for the tiny student's
    # capacity (a 3-minute run with 1.0 ended below its init: test Rouge-L 39.0 vs 43.5). Set 1.0 for real
    # models.
    pt_coef: float = non_negative(0.0)
    pt_kd_ratio: float = _unit(0.5)  # authors' code: 0.5·LM + 0.5·forward KD to the teacher on the PT text
    pt_batch_size: int = positive(8)
    # updates run the student in eval mode, as the authors' code: no dropout of any kind (nn.Dropout, OPT's
    # dropout/layerdrop, Llama's/Qwen's attention_dropout), so the first inner step's PPO ratio is 1; false:
    # train mode, dropout on
    disable_dropout: bool = True
    compile_decode: bool = False  # torch.compile the models for the rollouts (for CUDA; minutes of compiling)


@dataclass
class OnpolicyRklObjective(ReverseKldObjective):
    """Plain on-policy distillation with the per-token reverse-KL reward, as RL frameworks ship it: no
    teacher mixing, γ = 0, one optimizer step per round on all its rollouts."""

    name: str = "onpolicy_rkl"
    variant: str = "paper"  # the printed equations' base: no whitening, reward scale 1, no reward clip
    mini_batch_size: int = positive("${.num_rollouts}")
    ppo_epochs: int = positive(1)
    teacher_mix_alpha: Any = _unit(0.0)
    single_step: bool = False
    length_norm: str | None = "none"
    gamma: float | None = 0.0
    include_current: bool | None = True
    whiten: bool | None = False
    reward_scale: float | None = 1.0


CHOICES = {
    "sft": SftObjective,
    "forward_kld": ForwardKldObjective,
    "hinton_kd": HintonKdObjective,
    "seqkd": SeqKdObjective,
    "token_kd": TokenKdObjective,
    "gkd": GkdObjective,
    "distillm": DistillmObjective,
    "distillm2": Distillm2Objective,
    "taid": TaidObjective,
    "reverse_kld": ReverseKldObjective,
    "onpolicy_rkl": OnpolicyRklObjective,
}
