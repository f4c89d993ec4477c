"""MiniLLM's training loop: rollouts from the teacher-mixed policy, then PPO-style inner epochs.

One ``training_step`` is one round, ``minillm.training.round.MiniLLMRound`` (the same function
``make bench`` times), with Lightning's parts passed in:
1. sample ``num_rollouts`` responses, student and teacher decoding in lockstep (the rewards' teacher
   log-probs and, if they fit, the teacher's full distributions are recorded during sampling);
2. ``ppo_epochs`` passes over the round in minibatches of ``mini_batch_size``; each minibatch is one
   optimizer step on L = L_MiniLLM + pt_coef · L_PT;
3. round-level metrics are logged once (``rollout/…`` and the minibatch means of ``train/…``).
This module holds what is Lightning's or the run's: logging, the optimizer and scheduler, the α schedule,
the pre-training data, stop requests, non-finite skips, and the round in progress in the checkpoint.
"""

from __future__ import annotations

import logging
import math

import torch

from minillm.errors import MinillmError
from minillm.training.optim import make_optimizer, make_scheduler
from minillm.training.options import RoundOptions, alpha_at, keep_teacher_logits, pg_options
from minillm.training.precision import is_mixed
from minillm.training.round import (
    MiniLLMRound,
    RoundHooks,
    RoundState,
    compile_decoders,
    distributed_pool,
    pretrain_loss_on_block,
)
from minillm.training.supervised import SupervisedModule

log = logging.getLogger(__name__)


class OnPolicyModule(SupervisedModule):
    """``objective=reverse_kld`` (MiniLLM) and its on-policy relatives, with manual optimisation."""

    train_data = "prompts"  # the datamodule's training batches hold prompts only: one batch is one round

    def __init__(self, student, cfg, tokenizer, teacher=None, datamodule=None):
        super().__init__(student, cfg, tokenizer, teacher=teacher, datamodule=datamodule)
        if teacher is None:
            raise MinillmError(f"objective={cfg.objective.name} needs a teacher: set teacher.path")
        self.automatic_optimization = False
        self.obj = cfg.objective
        pg_options(
            cfg.objective
        )  # the estimator's numeric options (objective.clip_eps > 0, ...) before training
        self.disable_dropout = bool(cfg.objective.get("disable_dropout", True))
        self.datamodule_ref = datamodule
        self.rollout_gen: torch.Generator | None = None
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed + 2)
        self._pt_iter = None
        self._pt_taken = 0  # pre-training batches drawn, to restore the position on resume
        self._round: RoundState | None = None  # the round in progress (rollouts, minibatch order, sums)
        self._cache_logged: bool | None = None  # the teacher-cache decision last logged
        self._compiled = None  # torch.compile wrappers for decoding (objective.compile_decode)
        self._runner: MiniLLMRound | None = None  # the round as this fit runs it, built at its first step

    # ---------------------------------------------------------------- set-up
    def on_fit_start(self):
        super().on_fit_start()
        self._runner = None  # a new fit has its own optimizer, scheduler and process group
        self.rollout_gen = torch.Generator(device=self.device).manual_seed(self.rank_seed(3))  # per rank
        if self.disable_dropout and getattr(self.student, "is_activation_checkpointing", False):
            log.warning(
                "objective.disable_dropout runs the updates in eval mode, where Hugging Face models skip "
                "gradient checkpointing: set objective.disable_dropout=false to keep it"
            )
        # the mode is set at each round and each update (not here: Lightning would warn about
        # modules in eval mode at the start of training)

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

    def _next_pretrain_loss(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_PT on the next pre-training batch (``minillm.training.round.pretrain_loss_on_block``)."""
        return pretrain_loss_on_block(
            self.student,
            self.teacher.model,
            self._pretrain_batch(),
            kd_ratio=float(self.obj.get("pt_kd_ratio", 0.0) or 0.0),
            chunk_size=self.chunk_size,
        )

    # ---------------------------------------------------------------- one round
    def training_step(self, batch, batch_idx):
        runner = self._round_runner()
        if self._round is None:  # else: a round resumed from a checkpoint, redone with its own rollouts
            # α's schedule runs over objective.alpha_steps optimizer steps when set (time-budgeted runs,
            # where the total is unknown), else over the whole run (stored by configure_optimizers)
            horizon = self.obj.get("alpha_steps") or self._schedule_steps
            self._round = runner.start(
                batch["input_ids"],
                batch["attention_mask"],
                alpha=alpha_at(self.obj, self.global_step / max(1, horizon)),
                rollout_gen=self.rollout_gen,
                shuffle_gen=self.shuffle_gen,
            )
        self.log_dict(self._round.rollout_logs, on_step=True)
        means = runner.run(self._round)  # between updates a stop request saves the round and raises
        self._round = None
        self.log("train/loss", means.pop("train/loss", float("nan")), prog_bar=True)
        self.log_dict(means, on_step=True)

    def _round_runner(self) -> MiniLLMRound:
        """The round as this fit runs it, built at the fit's first step and kept (nothing in it changes
        within a fit: the options come from the config and the teacher, the optimizer and scheduler are
        Lightning's for the whole fit, the hooks read the trainer's state when called)."""
        if self._runner is None:
            self._runner = self.build_round()
        return self._runner

    def build_round(self) -> MiniLLMRound:
        """The round as training runs it: Lightning's optimizer, scheduler and backward, the module's
        stop, skip and L_PT handling."""
        options = RoundOptions.from_config(
            self.obj,
            grad_clip=self.cfg.get("grad_clip"),
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            keep_teacher_logits=self.cache_teacher_logits(),
            mixed_precision=is_mixed(self.trainer.precision),
            compile_updates=bool(self.cfg.fit.get("compile_updates", False)),
        )
        hooks = RoundHooks(
            backward=self.manual_backward,
            skipped=self.skip_nonfinite,
            stepped=self._reset_bad_steps,
            between_updates=self.stop_if_requested,  # mid-round: the checkpoint carries the round
            out_of_steps=self._out_of_budget,
            next_pretrain_loss=self._next_pretrain_loss,
        )
        pool, world_size = (
            distributed_pool()
        )  # DDP / FSDP: global statistics, the gradient of all ranks' loss
        return MiniLLMRound(
            self.student,
            self.teacher.model,
            self.optimizers(),
            self.lr_schedulers(),
            options,
            hooks,
            decoders=self._decoders(),
            device=self.device,
            pool=pool,
            world_size=world_size,
        )

    def _out_of_budget(self) -> bool:
        """The round ends before its next update at ``trainer.max_steps``, or once ``trainer.max_time`` is
        spent: checked before every update but a round's first (its rollout is not wasted)."""
        if 0 < self.trainer.max_steps <= self.global_step:
            return True
        return self._round is not None and self._round.next > 0 and self.out_of_time()

    def _reset_bad_steps(self) -> None:
        self.bad_steps = 0

    def _decoders(self):
        """The models the rollout calls: themselves, or with ``objective.compile_decode`` their
        ``torch.compile`` wrappers (same parameters, so the compiled student follows the updates)."""
        if not self.obj.get("compile_decode"):
            return self.student, self.teacher.model
        if self._compiled is None:
            self._compiled = compile_decoders(self.student, self.teacher.model)
        return self._compiled

    def cache_teacher_logits(self) -> bool:
        """Keep the teacher's distributions from the rollout (no teacher pass in the inner epochs) when
        ``objective.cache_teacher_logits`` allows it and the round's logits, num_rollouts × max_new_tokens ×
        vocabulary in the teacher's dtype, fit ``objective.teacher_cache_mb`` (null: no limit); otherwise
        the single-step term re-scores each minibatch with one teacher pass."""
        if not self.obj.get("cache_teacher_logits", True):
            return False
        keep, need_mib = keep_teacher_logits(self.obj, self.teacher.model)
        if self._cache_logged != keep:
            self._cache_logged = keep
            log.info(
                "teacher distributions %s: %.1f MiB per round (objective.teacher_cache_mb=%s)",
                "kept from the rollout" if keep else "re-scored with one teacher pass per minibatch",
                need_mib,
                self.obj.get("teacher_cache_mb"),
            )
        return keep

    def batch_in_progress(self) -> bool:
        return self._round is not None

    def rank_generators(self) -> list[torch.Generator]:
        return [self.rollout_gen]

    def extra_state(self) -> dict:
        return {
            "rollout_gen": None if self.rollout_gen is None else self.rollout_gen.get_state(),
            "shuffle_gen": self.shuffle_gen.get_state(),
            "pt_batches": self._pt_taken,
            "round": None if self._round is None else self._round.state_dict(),
        }

    def load_extra_state(self, state: dict) -> None:
        if state.get("rollout_gen") is not None:
            self.rollout_gen.set_state(state["rollout_gen"])
        self.shuffle_gen.set_state(state["shuffle_gen"])
        self._pt_iter, self._pt_taken = None, 0
        for _ in range(int(state.get("pt_batches", 0))):
            self._pretrain_batch()
        if state.get("round") is not None:
            self._round = RoundState.from_state_dict(state["round"])
