"""One MiniLLM round, without Lightning: the rollouts, then ``ppo_epochs`` inner epochs of minibatch updates.

``OnPolicyModule.training_step`` runs it, passing Lightning's parts in as callables (``backward`` is its
``manual_backward``, ``skipped`` its count of non-finite updates, ``between_updates`` its stop handling), and
``make bench`` times it, passing a timer; so the benchmark times what training runs. A round, top to bottom:

1. ``start``: sample one response per prompt from p̃ = α·p + (1−α)·q, student and teacher decoding in
   lockstep (the rewards' teacher log-probs and, when kept, the teacher's distributions are recorded while
   sampling; at α = 0 the student decodes alone and one teacher pass scores the responses), then fix the
   order of every minibatch of the round's ``ppo_epochs`` inner epochs;
2. ``run``: one optimizer step per minibatch on L = L_MiniLLM + pt_coef · L_PT (``update``), until the
   round is done; returns the means of what the updates logged.

The round in progress (``RoundState``: its rollouts, minibatch order, next index and sums) can be saved
between two updates and resumed. The losses are the pure functions of ``minillm.objectives``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from minillm.errors import MinillmError
from minillm.objectives.policy_gradient import LOCAL, RankPool, minillm_loss
from minillm.objectives.pretrain import pretrain_loss
from minillm.rollout.buffer import RolloutBuffer
from minillm.rollout.sampler import (
    Rollout,
    response_logits,
    sample_rollouts,
    sampled_logprobs,
    score_with_teacher,
)
from minillm.training.options import RoundOptions
from minillm.training.update_passes import FellBack, UpdatePasses

# loss(logits, teacher_logits, minibatch, logprobs) -> (loss, logs); logprobs: the (B, T) log-probs of the
# sampled tokens from the compiled student's pass, or None (eager passes, or a loss the round is told does not
# read them): a loss that reads them then takes them from the logits
LossFn = Callable[[Tensor, Tensor, Rollout, Tensor | None], tuple[Tensor, dict[str, Tensor]]]


def _backward(loss: Tensor) -> None:
    loss.backward()


def _nothing(*args) -> None:
    pass


def _never() -> bool:
    return False


def _no_timer(name: str) -> AbstractContextManager:
    return contextlib.nullcontext()


@dataclass
class RoundHooks:
    """What the caller does at the round's decision points; the defaults run a round on its own."""

    backward: Callable[[Tensor], None] = _backward  # Lightning: the module's manual_backward
    # a non-finite loss or gradient norm: the update is skipped (the argument says which); may raise
    skipped: Callable[[str], None] = _nothing
    stepped: Callable[[], None] = _nothing  # just before each optimizer step
    between_updates: Callable[[], None] = _nothing  # may raise to stop mid-round (the state can be saved)
    out_of_steps: Callable[[], bool] = _never  # True ends the round before its next update (max_steps)
    # L_PT and its logs on the next pre-training batch (see ``pretrain_loss_on_block``); needed when pt_coef > 0
    next_pretrain_loss: Callable[[], tuple[Tensor, dict[str, Tensor]]] | None = None
    # wraps the round's parts: "rollout", "teacher_scoring", "student_fwd_bwd", "optimizer" (make bench)
    timer: Callable[[str], AbstractContextManager] = _no_timer


@dataclass
class RoundState:
    """A round in progress: its rollouts, the order of all its minibatches, and its updates' sums so far."""

    buffer: RolloutBuffer
    order: list[Tensor]  # row indices of every minibatch, all inner epochs one after the other
    rollout_logs: dict[str, float]  # ``rollout/…`` and ``train/lr``, logged once per round
    next: int = 0  # the next minibatch to update on
    sums: dict[str, float] = field(default_factory=dict)  # per log key, over the updates taken
    count: int = 0  # updates taken
    skipped: int = 0  # updates skipped for non-finite values

    def state_dict(self) -> dict:
        """Plain containers and tensors, for the checkpoint."""
        return {
            "order": self.order,
            "next": self.next,
            "sums": self.sums,
            "count": self.count,
            "skipped": self.skipped,
            "rollout_logs": self.rollout_logs,
            "buffer": self.buffer.state_dict(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> RoundState:
        buffer = RolloutBuffer()
        buffer.load_state_dict(state["buffer"])
        return cls(
            buffer=buffer,
            order=list(state["order"]),
            rollout_logs=dict(state["rollout_logs"]),
            next=int(state["next"]),
            sums=dict(state["sums"]),
            count=int(state["count"]),
            skipped=int(state["skipped"]),
        )


def distributed_pool() -> tuple[RankPool, int]:
    """The :class:`RankPool` of the running process group (all-reduce sum / max of detached tensors) and
    its world size; ``(LOCAL, 1)`` in one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return LOCAL, 1

    def reduce(op):
        def pooled(value: Tensor) -> Tensor:
            value = value.detach().clone()
            dist.all_reduce(value, op=op)
            return value

        return pooled

    return RankPool(sum=reduce(dist.ReduceOp.SUM), max=reduce(dist.ReduceOp.MAX)), dist.get_world_size()


def minillm_minibatch_loss(options: RoundOptions, pool: RankPool = LOCAL) -> LossFn:
    """The MiniLLM loss of one minibatch (``minillm_loss``: policy-gradient and single-step terms); with a
    ``pool`` of data-parallel ranks, this rank's share of the loss of all ranks' minibatches."""

    def loss(
        logits: Tensor, teacher_logits: Tensor, mb: Rollout, logprobs: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        return minillm_loss(
            logits,
            teacher_logits,
            sampled_logprobs(logits, mb.response_ids) if logprobs is None else logprobs,
            mb.student_logprobs,
            mb.teacher_logprobs,
            mb.mix_logprobs,
            mb.response_mask,
            options.pg,
            chunk_size=options.chunk_size,
            pool=pool,
        )

    return loss


def pretrain_loss_on_block(
    student: nn.Module, teacher: nn.Module, block: Tensor, *, kd_ratio: float, chunk_size: int | None
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_PT (:func:`minillm.objectives.pretrain.pretrain_loss`) on one (B, L) block of pre-training text:
    the student's logits, and the teacher's only when the KD term needs them."""
    logits = student(input_ids=block).logits[:, :-1]
    teacher_logits = None
    if kd_ratio > 0:
        with torch.no_grad():
            teacher_logits = teacher(input_ids=block).logits[:, :-1]
    return pretrain_loss(logits, block[:, 1:], teacher_logits, kd_ratio=kd_ratio, chunk_size=chunk_size)


@torch.no_grad()
def rollout_logs(
    rollout: Rollout, alpha: float, eos_token_id: int | None, pool: RankPool = LOCAL
) -> dict[str, float]:
    """The round's ``rollout/…`` metrics (over the rollouts of every rank with a ``pool``)."""
    mask = rollout.response_mask.float()
    n = pool.sum(mask.sum()).clamp(min=1)
    rows = pool.sum(torch.tensor(float(mask.shape[0]), device=mask.device)).clamp(min=1)
    reward = pool.sum(((rollout.teacher_logprobs - rollout.student_logprobs) * mask).sum()) / n
    weights = torch.exp(rollout.student_logprobs - rollout.mix_logprobs) * mask
    lengths = mask.sum(dim=1)
    if eos_token_id is None:
        finished = torch.zeros_like(rollout.response_mask, dtype=torch.bool)
    else:
        finished = (rollout.response_ids == eos_token_id).logical_and(rollout.response_mask.bool())
    logs = {
        "rollout/reward": reward,
        # per token: the mean of log q − log p over the sampled tokens. At α = 0 a Monte Carlo estimate of
        # the student's token-level KL(q‖p) on these prefixes; at α > 0 the tokens come from p̃, which
        # puts more mass on the teacher's choices, so it reads lower than that KL
        "rollout/reverse_kl": -reward,
        # the same with the per-token importance weight w_t = q/p̃: an estimate of KL(q‖p) on these
        # prefixes at any α (equal to rollout/reverse_kl at α = 0). The exact value: minillm.diagnose
        "rollout/reverse_kl_iw": pool.sum(
            (weights * (rollout.student_logprobs - rollout.teacher_logprobs)).sum()
        )
        / n,
        "rollout/length": pool.sum(lengths.sum()) / rows,
        "rollout/finished": pool.sum(finished.any(dim=1).float().sum()) / rows,
        "rollout/importance_weight": pool.sum(weights.sum()) / n,
        "rollout/importance_weight_max": pool.max(weights.max()),
    }
    logs = {k: float(v) for k, v in logs.items()}
    logs["rollout/alpha"] = float(alpha)
    return logs


def compile_decoders(student: nn.Module, teacher: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``torch.compile`` wrappers of both models for decoding (``objective.compile_decode``; make bench's
    ``compile``): same parameters, so the compiled student follows the updates."""
    return torch.compile(student, dynamic=True), torch.compile(teacher, dynamic=True)


class MiniLLMRound:
    """Runs MiniLLM rounds for one student, teacher, optimizer and scheduler.

    Args:
        student: the trained model; teacher: the frozen one (never stepped, only run under no_grad).
        optimizer, scheduler: stepped once per update (scheduler per optimizer step).
        options: the round's options (``RoundOptions.from_config``).
        hooks: the caller's parts (Lightning's backward, stop and skip handling; a timer).
        decoders: the (student, teacher) the rollout calls, e.g. ``compile_decoders``; None: the models.
        loss: ``loss(logits, teacher_logits, minibatch, logprobs) -> (loss, logs)`` (``LossFn``); None: the
            MiniLLM loss. ``loss_logprobs``: whether it reads ``logprobs`` (else it gets None).
        device: where minibatches go (a resumed round's rollouts are loaded on CPU); None: the student's.
        pool, world_size: the data-parallel ranks (:func:`distributed_pool`). The MiniLLM loss is then this
            rank's share of the loss of every rank's minibatch (global whitening and token counts), and its
            backward is scaled by the world size, since DDP / FSDP average gradients over ranks; L_PT stays
            a per-rank mean that the strategy averages. Logged values are global.

    With ``options.compile_updates`` the student's teacher-forced pass and the loss run under
    ``torch.compile`` (``minillm.training.update_passes``); eagerly with several processes.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        optimizer,
        scheduler,
        options: RoundOptions,
        hooks: RoundHooks | None = None,
        *,
        decoders: tuple[nn.Module, nn.Module] | None = None,
        loss: LossFn | None = None,
        loss_logprobs: bool = True,
        device: torch.device | str | None = None,
        pool: RankPool = LOCAL,
        world_size: int = 1,
    ) -> None:
        self.student, self.teacher = student, teacher
        self.optimizer, self.scheduler = optimizer, scheduler
        self.options = options
        self.hooks = hooks or RoundHooks()
        self.decoders = decoders or (student, teacher)
        self.pool, self.world_size = pool, int(world_size)
        self.loss = loss or minillm_minibatch_loss(options, pool)
        distributed = world_size > 1 or pool is not LOCAL
        self.passes = UpdatePasses(
            student,
            self.loss,
            logprobs=loss_logprobs,
            compiled=options.compile_updates,
            why_not="not with several processes (DDP, FSDP)" if distributed else None,
        )
        self.device = device if device is not None else next(student.parameters()).device
        if options.pt_coef > 0 and self.hooks.next_pretrain_loss is None:
            raise MinillmError(
                f"objective.pt_coef={options.pt_coef}: L_PT needs pre-training batches, and none are given here"
            )

    def __call__(
        self, prompt_ids: Tensor, prompt_mask: Tensor, *, alpha: float, rollout_gen, shuffle_gen
    ) -> dict[str, float]:
        """One whole round on a batch of prompts; returns its ``rollout/…`` logs and ``train/…`` means."""
        state = self.start(
            prompt_ids, prompt_mask, alpha=alpha, rollout_gen=rollout_gen, shuffle_gen=shuffle_gen
        )
        return {**state.rollout_logs, **self.run(state)}

    def set_update_mode(self) -> None:
        """Put the student in the mode the updates run in.

        Rollouts are sampled in eval mode. With ``disable_dropout`` (the default) the updates run in eval
        mode too, as in the authors' code: every form of dropout is then off, not only ``nn.Dropout``
        modules but also the dropout Hugging Face models apply functionally from config floats when
        ``self.training`` (OPT's dropout, activation_dropout and layerdrop, Llama's and Qwen's
        attention_dropout), so the PPO ratio q_θ/q_old of the first inner step is 1 (up to float rounding
        between the decoding and the teacher-forced pass). Gradients flow in eval mode as in train mode.
        Set before every update, so nothing that changes the mode in between (validation, a callback) can
        turn dropout back on.
        """
        self.student.train(not self.options.disable_dropout)

    def start(
        self,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        *,
        alpha: float,
        rollout_gen: torch.Generator | None,
        shuffle_gen: torch.Generator | None,
    ) -> RoundState:
        """Sample the round's rollouts and fix the order of all its minibatches."""
        o, timer = self.options, self.hooks.timer
        student, teacher = self.decoders
        # At α = 0 the teacher never affects what is sampled: the student decodes alone, then ONE teacher
        # pass scores the finished responses (what sample_rollouts does itself with teacher_after_decoding;
        # done here so that the teacher's pass is timed as teacher scoring)
        score_after = alpha == 0.0 and o.teacher_after_decoding
        with timer("rollout"):
            rollout = sample_rollouts(
                student,
                None if score_after else teacher,
                prompt_ids,
                prompt_mask,
                dataclasses.replace(o.sampling, teacher_mix_alpha=alpha),
                generator=rollout_gen,
                keep_teacher_logits=o.keep_teacher_logits and not score_after,
                teacher_after_decoding=False,
            )
        if score_after:
            with timer("teacher_scoring"):
                rollout = score_with_teacher(teacher, rollout, keep_teacher_logits=o.keep_teacher_logits)
        self.set_update_mode()
        buffer = RolloutBuffer()
        buffer.add(rollout)
        order = buffer.minibatch_order(o.mini_batch_size, o.ppo_epochs, generator=shuffle_gen)
        if o.rescore_old_logprobs:
            with timer("student_fwd_bwd"):  # one student pass, no gradient
                rollout = self.rescore_old_logprobs(buffer, order, alpha)
        logs = {
            **rollout_logs(rollout, alpha, o.sampling.eos_token_id, self.pool),
            "train/lr": float(self.optimizer.param_groups[0]["lr"]),
        }
        return RoundState(buffer=buffer, order=order, rollout_logs=logs)

    @torch.no_grad()
    def rescore_old_logprobs(self, buffer: RolloutBuffer, order: list[Tensor], alpha: float) -> Rollout:
        """Replace the rollout's ``student_logprobs`` (log q_old, B × T) by those of a teacher-forced pass
        over each minibatch of the first inner epoch, exactly as ``update`` will run it (same rows, same
        trimming, same mode and precision, float32 log-softmax); returns the updated rollout, also in
        ``buffer``. At α = 0, temperature 1 and no top-k / top-p, p̃ is q itself: ``mix_logprobs`` follow,
        so the importance weights stay exactly 1."""
        o, rollout = self.options, buffer.rollout()
        student_lp = torch.zeros_like(rollout.student_logprobs)
        epoch = math.ceil(len(rollout) / o.mini_batch_size)  # the first inner epoch's minibatches
        for rows in order[:epoch]:
            mb = buffer.minibatch(rows).to(self.device)
            logprobs = None
            if self.passes.active:  # the update's compiled pass, gradients on as there (the same graph)
                # the pass never reads the teacher's logits: not padded along
                shaped = self.passes.shaped(dataclasses.replace(mb, teacher_logits=None))
                with contextlib.suppress(FellBack), torch.enable_grad():
                    logits, logprobs = self.passes.forward(shaped)
                    if logprobs is None:  # a loss without the ratio: any log-probs of these logits will do
                        logprobs = sampled_logprobs(logits, shaped.response_ids)
                    logprobs = logprobs.detach()[:, : mb.response_ids.shape[1]]  # the bucket's padding off
            if logprobs is None:  # eager (compiling may have failed just now)
                logprobs = sampled_logprobs(response_logits(self.student, mb), mb.response_ids)
            logprobs = logprobs * mb.response_mask
            student_lp[rows.to(student_lp.device), : logprobs.shape[1]] = logprobs.to(student_lp.device)
        sampling = o.sampling
        plain = alpha == 0.0 and sampling.temperature == 1.0 and sampling.top_k == 0 and sampling.top_p == 1.0
        rollout = dataclasses.replace(
            rollout, student_logprobs=student_lp, mix_logprobs=student_lp if plain else rollout.mix_logprobs
        )
        buffer.clear()
        buffer.add(rollout)
        return rollout

    def run(self, state: RoundState) -> dict[str, float]:
        """The round's remaining updates; returns the means of their logs (``train/…``) and
        ``train/skipped_updates``. Stops early when ``hooks.out_of_steps()``; ``hooks.between_updates``
        may raise to stop mid-round, leaving ``state`` ready to be saved and resumed."""
        while state.next < len(state.order):
            if self.hooks.out_of_steps():
                break  # max_steps counts optimizer steps, and may end a round early
            logs = self.update(state.buffer.minibatch(state.order[state.next]))
            state.next += 1
            if logs is None:
                state.skipped += 1
            else:
                for key, value in logs.items():
                    state.sums[key] = state.sums.get(key, 0.0) + float(value)
                state.count += 1
            if state.next < len(state.order):
                self.hooks.between_updates()
        state.buffer.clear()  # the round's tensors are freed before the next rollout
        means = {f"train/{k}": v / max(state.count, 1) for k, v in state.sums.items()}
        means["train/skipped_updates"] = float(state.skipped)
        return means

    def update(self, mb: Rollout) -> dict[str, Tensor] | None:
        """One optimizer step on one minibatch of rollouts (plus a pre-training batch when pt_coef > 0).

        A non-finite loss or gradient norm skips the step (``hooks.skipped``) and returns None.
        """
        self.set_update_mode()
        mb = mb.to(self.device)
        try:
            return self._update(mb)
        except FellBack:
            pass
        # compiling (or the padded minibatch's memory) failed before any gradient flowed: the update again, eagerly
        # and unpadded, outside the handler, so that the failed attempt's tensors went with its exception
        self.optimizer.zero_grad(set_to_none=True)
        return self._update(mb)

    def _update(self, mb: Rollout) -> dict[str, Tensor] | None:
        o, hooks, timer = self.options, self.hooks, self.hooks.timer
        # compiled: padded to its shape bucket (the same values to float rounding)
        mb = self.passes.shaped(mb)
        with timer("student_fwd_bwd"):
            logits, logprobs = self.passes.forward(mb)
        teacher_logits = mb.teacher_logits
        if teacher_logits is None:
            with timer("teacher_scoring"), torch.no_grad():
                teacher_logits = response_logits(self.teacher, mb)
        with timer("student_fwd_bwd"):
            share, logs = self.passes.loss(logits, teacher_logits, mb, logprobs)
            # the gradient of the loss of every rank's minibatch is the sum of the shares' gradients; the
            # strategy averages over ranks, so the share is scaled by the world size (1: unchanged)
            objective = share if self.world_size == 1 else share * self.world_size
            loss = share if self.pool is LOCAL else self.pool.sum(share.detach())  # logged: global
            if o.pt_coef > 0:
                pt_loss, pt_logs = hooks.next_pretrain_loss()
                objective = objective + o.pt_coef * pt_loss
                pt_mean = pt_loss if self.pool is LOCAL else self.pool.sum(pt_loss.detach()) / self.world_size
                loss = loss + o.pt_coef * pt_mean
                logs.update(pt_logs)
            self.optimizer.zero_grad(set_to_none=True)
            finite = torch.isfinite(objective.detach())
            if self.pool is not LOCAL:  # every rank skips together (a lone skip would stall DDP's all-reduce)
                finite = self.pool.max((~finite).float()) == 0
            if not finite:
                hooks.skipped("teacher log-probs, rewards or loss")
                return None
            hooks.backward(objective)
        self.passes.first_update_done()
        with timer("optimizer"):
            grad_norm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), o.grad_clip or float("inf"))
            if not torch.isfinite(grad_norm):
                self.optimizer.zero_grad(set_to_none=True)
                hooks.skipped("gradient norm")
                return None
            hooks.stepped()
            self.optimizer.step()
            self.scheduler.step()
        logs.update(loss=loss.detach(), grad_norm=grad_norm.detach())
        return logs
