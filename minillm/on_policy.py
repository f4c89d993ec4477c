"""MiniLLM's training loop: rollouts from the teacher-mixed policy, then PPO-style inner epochs.

One ``training_step`` is one round, written top to bottom:
1. sample ``num_rollouts`` responses, student and teacher decoding in lockstep (the rewards' teacher
   log-probs and, if they fit, the teacher's full distributions are recorded during sampling);
2. ``ppo_epochs`` passes over the round in minibatches of ``mini_batch_size``; each minibatch is one
   optimizer step on L = L_MiniLLM + pt_coef · L_PT;
3. round-level metrics are logged once (``rollout/…`` and the minibatch means of ``train/…``).
The losses are the pure functions of ``minillm.objectives.policy_gradient``; this module only wires them.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from minillm.errors import MinillmError
from minillm.objectives.divergences import forward_kl
from minillm.objectives.policy_gradient import PGOptions, minillm_loss
from minillm.rollout.buffer import RolloutBuffer
from minillm.rollout.sampler import response_logits, sample_rollouts, sampled_logprobs
from minillm.training.optim import make_optimizer, make_scheduler
from minillm.training.supervised import SupervisedModule

log = logging.getLogger(__name__)

VARIANTS = ("code", "paper")
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


def pg_options(objective_cfg) -> PGOptions:
    """The estimator's options: the ``variant`` preset, then any key the config sets explicitly."""
    variant = objective_cfg.get("variant", "code")
    if variant not in VARIANTS:
        raise MinillmError(f"objective.variant={variant!r}; choose one of {list(VARIANTS)}")
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
    schedule = objective_cfg.get("alpha_schedule", "constant")
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return start
    if schedule == "linear":
        return start + (end - start) * progress
    if schedule == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise MinillmError(
        f"objective.alpha_schedule={schedule!r}; choose one of ['constant', 'cosine', 'linear']"
    )


class OnPolicyModule(SupervisedModule):
    """``objective=reverse_kld`` (MiniLLM) and its on-policy relatives, with manual optimisation."""

    train_data = "prompts"  # the datamodule's training batches hold prompts only: one batch is one round

    def __init__(self, student, cfg, tokenizer, teacher=None, datamodule=None):
        super().__init__(student, cfg, tokenizer, teacher=teacher, datamodule=datamodule)
        if teacher is None:
            raise MinillmError(f"objective={cfg.objective.name} needs a teacher: set teacher.path")
        self.automatic_optimization = False
        self.obj = cfg.objective
        self.options = pg_options(cfg.objective)
        self.disable_dropout = bool(cfg.objective.get("disable_dropout", True))
        alpha_at(cfg.objective, 0.0)  # validates the schedule before training starts
        self.datamodule_ref = datamodule
        self.rollout_gen: torch.Generator | None = None
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed + 2)
        self._pt_iter = None
        self._pt_taken = 0  # pre-training batches drawn, to restore the position on resume
        self.buffer = RolloutBuffer()
        self._round: dict | None = None  # the round in progress (rollouts, minibatch order, sums)
        self._cache_logged: bool | None = None  # the teacher-cache decision last logged
        self._compiled = None  # torch.compile wrappers for decoding (objective.compile_decode)

    # ---------------------------------------------------------------- set-up
    def on_fit_start(self):
        super().on_fit_start()
        self.rollout_gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 3)
        if self.disable_dropout and getattr(self.student, "is_activation_checkpointing", False):
            log.warning(
                "objective.disable_dropout runs the updates in eval mode, where Hugging Face models skip "
                "gradient checkpointing: set objective.disable_dropout=false to keep it"
            )
        # the mode is set at each round and each update (not here: Lightning would warn about
        # modules in eval mode at the start of training)

    def _set_update_mode(self) -> None:
        """Put the student in the mode the updates run in.

        Rollouts are sampled in eval mode. With ``objective.disable_dropout`` (the default) the updates
        run in eval mode too, as in the authors' code: every form of dropout is then off, not only
        ``nn.Dropout`` modules but also the dropout Hugging Face models apply functionally from config
        floats when ``self.training`` (OPT's dropout, activation_dropout and layerdrop, Llama's and
        Qwen's attention_dropout), so the PPO ratio q_θ/q_old of the first inner step is 1 (up to float
        rounding between the decoding and the teacher-forced pass). Gradients flow in eval mode as in train mode. Set before every update, so nothing that
        changes the mode in between (validation, a callback) can turn dropout back on.
        """
        self.student.train(not self.disable_dropout)

    def total_steps(self) -> int:
        """Optimizer steps in the whole run (for the schedules)."""
        if self.trainer.max_steps and self.trainer.max_steps > 0:
            return self.trainer.max_steps
        rounds = len(self.datamodule_ref.train_dataloader()) * max(1, self.trainer.max_epochs or 1)
        per_round = self.obj.ppo_epochs * math.ceil(self.obj.num_rollouts / self.obj.mini_batch_size)
        return rounds * per_round

    def configure_optimizers(self):
        optimizer = make_optimizer(self.student.parameters(), self.cfg.optim)
        self._schedule_steps = self.total_steps()  # the lr's and (without alpha_steps) the α schedule's
        scheduler = make_scheduler(optimizer, self.cfg.scheduler, self._schedule_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _pretrain_batch(self) -> torch.Tensor:
        if self._pt_iter is None:
            self._pt_iter = self._endless(self.datamodule_ref.pretrain_loader(self.obj.pt_batch_size))
        self._pt_taken += 1
        return next(self._pt_iter).to(self.device)

    @staticmethod
    def _endless(loader):
        while True:
            yield from loader

    # ---------------------------------------------------------------- one round
    def training_step(self, batch, batch_idx):
        if self._round is None:  # else: a round resumed from a checkpoint, redone with its own rollouts
            self._start_round(batch)
        state = self._round
        self.log_dict(state["rollout_logs"], on_step=True)
        while state["next"] < len(state["order"]):
            if 0 < self.trainer.max_steps <= self.global_step:
                break  # max_steps counts optimizer steps, and may end a round early
            logs = self._update(self.buffer.minibatch(state["order"][state["next"]]))
            state["next"] += 1
            if logs is None:
                state["skipped"] += 1
            else:
                for key, value in logs.items():
                    state["sums"][key] = state["sums"].get(key, 0.0) + float(value)
                state["count"] += 1
            if state["next"] < len(state["order"]):
                self.stop_if_requested()  # mid-round: the checkpoint carries the round
        self._round = None
        self.buffer.clear()  # the round's tensors are freed before the next rollout
        means = {f"train/{k}": v / max(state["count"], 1) for k, v in state["sums"].items()}
        means["train/skipped_updates"] = float(state["skipped"])
        self.log("train/loss", means.pop("train/loss", float("nan")), prog_bar=True)
        self.log_dict(means, on_step=True)

    def _start_round(self, batch) -> None:
        """Sample the round's rollouts and fix the order of all its minibatches."""
        # α's schedule runs over objective.alpha_steps optimizer steps when set (time-budgeted runs, where the
        # total is unknown), else over the whole run
        horizon = self.obj.get("alpha_steps") or self.total_steps()
        alpha = alpha_at(self.obj, self.global_step / max(1, horizon))
        student, teacher = self._decoders()
        rollout = sample_rollouts(
            student,
            teacher,
            batch["input_ids"],
            batch["attention_mask"],
            max_new_tokens=self.obj.max_new_tokens,
            alpha=alpha,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            temperature=self.obj.get("temperature", 1.0),
            top_k=self.obj.get("top_k", 0),
            top_p=self.obj.get("top_p", 1.0),
            generator=self.rollout_gen,
            keep_teacher_logits=self.cache_teacher_logits(),
        )
        self._set_update_mode()
        self.buffer.clear()
        self.buffer.add(rollout)
        n, size = len(rollout), self.obj.mini_batch_size
        order = []
        for _ in range(self.obj.ppo_epochs):
            perm = torch.randperm(n, generator=self.shuffle_gen)
            order.extend(perm[i : i + size] for i in range(0, n, size))
        self._round = {
            "order": order,
            "next": 0,
            "sums": {},
            "count": 0,
            "skipped": 0,
            "rollout_logs": {
                **self._rollout_logs(rollout, alpha),
                "train/lr": float(self.optimizers().param_groups[0]["lr"]),
            },
        }

    def _decoders(self):
        """The models the rollout calls: themselves, or with ``objective.compile_decode`` their
        ``torch.compile`` wrappers (same parameters, so the compiled student follows the updates)."""
        if not self.obj.get("compile_decode"):
            return self.student, self.teacher.model
        if self._compiled is None:
            self._compiled = (
                torch.compile(self.student, dynamic=True),
                torch.compile(self.teacher.model, dynamic=True),
            )
        return self._compiled

    def cache_teacher_logits(self) -> bool:
        """Keep the teacher's distributions from the rollout (no teacher pass in the inner epochs) when
        ``objective.cache_teacher_logits`` allows it and the round's logits, num_rollouts × max_new_tokens ×
        vocabulary in the teacher's dtype, fit ``objective.teacher_cache_mb`` (null: no limit); otherwise
        the single-step term re-scores each minibatch with one teacher pass."""
        if not self.obj.get("cache_teacher_logits", True):
            return False
        budget = self.obj.get("teacher_cache_mb")
        teacher = self.teacher.model
        head = teacher.get_output_embeddings().weight
        need_mib = (
            self.obj.num_rollouts * self.obj.max_new_tokens * head.shape[0] * head.element_size() / 2**20
        )
        keep = budget is None or need_mib <= float(budget)
        if self._cache_logged != keep:
            self._cache_logged = keep
            log.info(
                "teacher distributions %s: %.1f MiB per round (objective.teacher_cache_mb=%s)",
                "kept from the rollout" if keep else "re-scored with one teacher pass per minibatch",
                need_mib,
                budget,
            )
        return keep

    def batch_in_progress(self) -> bool:
        return self._round is not None

    def extra_state(self) -> dict:
        state = {
            "rollout_gen": None if self.rollout_gen is None else self.rollout_gen.get_state(),
            "shuffle_gen": self.shuffle_gen.get_state(),
            "pt_batches": self._pt_taken,
            "round": None,
        }
        if self._round is not None:
            state["round"] = {**self._round, "buffer": self.buffer.state_dict()}
        return state

    def load_extra_state(self, state: dict) -> None:
        if state.get("rollout_gen") is not None:
            self.rollout_gen.set_state(state["rollout_gen"])
        self.shuffle_gen.set_state(state["shuffle_gen"])
        self._pt_iter, self._pt_taken = None, 0
        for _ in range(int(state.get("pt_batches", 0))):
            self._pretrain_batch()
        saved = state.get("round")
        if saved is not None:
            saved = dict(saved)
            self.buffer.load_state_dict(saved.pop("buffer"))
            self._round = saved

    def _update(self, mb) -> dict[str, torch.Tensor] | None:
        """One optimizer step on one minibatch of rollouts (plus a pre-training batch).

        A non-finite loss or gradient norm skips the step (``skip_nonfinite``) and returns None.
        """
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        self._set_update_mode()
        mb = mb.to(self.device)
        logits = response_logits(self.student, mb)
        mask = mb.response_mask
        logprobs = sampled_logprobs(logits, mb.response_ids)
        if mb.teacher_logits is not None:
            teacher_logits = mb.teacher_logits
        else:
            with torch.no_grad():
                teacher_logits = response_logits(self.teacher.model, mb)
        loss, logs = minillm_loss(
            logits,
            teacher_logits,
            logprobs,
            mb.student_logprobs,
            mb.teacher_logprobs,
            mb.mix_logprobs,
            mask,
            self.options,
            chunk_size=self.chunk_size,
        )
        pt_coef = float(self.obj.get("pt_coef", 0.0) or 0.0)
        if pt_coef > 0:
            pt_loss, pt_logs = self._pretrain_loss()
            loss = loss + pt_coef * pt_loss
            logs.update(pt_logs)
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            self.skip_nonfinite("teacher log-probs, rewards or loss")
            return None
        self.manual_backward(loss)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.student.parameters(), self.cfg.get("grad_clip") or float("inf")
        )
        if not torch.isfinite(grad_norm):
            optimizer.zero_grad(set_to_none=True)
            self.skip_nonfinite("gradient norm")
            return None
        self.bad_steps = 0
        optimizer.step()
        scheduler.step()
        logs.update(loss=loss.detach(), grad_norm=grad_norm.detach())
        return logs

    def _pretrain_loss(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_PT on one block batch: LM loss, mixed with forward KD to the teacher (authors' code: 0.5/0.5)."""
        block = self._pretrain_batch()
        logits = self.student(input_ids=block).logits[:, :-1]
        targets = block[:, 1:]
        lm = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        kd_ratio = float(self.obj.get("pt_kd_ratio", 0.0) or 0.0)
        logs = {"pt_lm_loss": lm.detach()}
        if kd_ratio <= 0:
            logs["pt_loss"] = lm.detach()
            return lm, logs
        with torch.no_grad():
            t_logits = self.teacher.model(input_ids=block).logits[:, :-1]
        kd = forward_kl(logits, t_logits, reduction="mean", chunk_size=self.chunk_size)
        pt = (1 - kd_ratio) * lm + kd_ratio * kd
        logs.update(pt_kd_kl=kd.detach(), pt_loss=pt.detach())
        return pt, logs

    @torch.no_grad()
    def _rollout_logs(self, rollout, alpha: float) -> dict[str, float]:
        mask = rollout.response_mask.float()
        n = mask.sum().clamp(min=1)
        reward = ((rollout.teacher_logprobs - rollout.student_logprobs) * mask).sum() / n
        weights = torch.exp(rollout.student_logprobs - rollout.mix_logprobs) * mask
        lengths = mask.sum(dim=1)
        finished = (rollout.response_ids == self.tokenizer.eos_token_id).logical_and(
            rollout.response_mask.bool()
        )
        logs = {
            "rollout/reward": reward,
            # per token: the mean of log q − log p over the sampled tokens. At α = 0 a Monte Carlo estimate of
            # the student's token-level KL(q‖p) on these prefixes; at α > 0 the tokens come from p̃, which
            # puts more mass on the teacher's choices, so it reads lower than that KL
            "rollout/reverse_kl": -reward,
            # the same with the per-token importance weight w_t = q/p̃: an estimate of KL(q‖p) on these
            # prefixes at any α (equal to rollout/reverse_kl at α = 0). The exact value: minillm.diagnose
            "rollout/reverse_kl_iw": (weights * (rollout.student_logprobs - rollout.teacher_logprobs)).sum()
            / n,
            "rollout/length": lengths.mean(),
            "rollout/finished": finished.any(dim=1).float().mean(),
            "rollout/importance_weight": weights.sum() / n,
            "rollout/importance_weight_max": weights.max(),
        }
        logs = {k: float(v) for k, v in logs.items()}
        logs["rollout/alpha"] = float(alpha)
        return logs
