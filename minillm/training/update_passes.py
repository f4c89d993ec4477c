"""The two passes of a round's update: the student's teacher-forced pass (its logits at the response positions
and, when the loss reads them, the log-probs of the sampled tokens) and the loss; run eagerly, or each under
``torch.compile`` (``fit.compile_updates``).

On the shipped pair most of an update's time is elementwise work over (batch, tokens, vocabulary) tensors: the
log-softmaxes of the student's and teacher's logits, the full-vocabulary reverse KL and their backward, each a
pass of its own over memory when run eagerly. Compiled, inductor fuses them (``make bench``'s
``pairs.fast_path`` measures the round with and without).

Exactness: when the round rescores the old log-probs (``RoundOptions.rescore_old_logprobs``, on under mixed
precision), it calls the same compiled pass, with gradients enabled as in the update, so the first inner step's
PPO ratio is exactly 1 under compiling too. Compiled and eager losses and gradients agree to float rounding (a
fused reduction sums in another order), not bit for bit; with dropout on too, since inductor draws its random
numbers with eager's kernels here (``fallback_random``), so the masks are the same for a seed.

Where compiling fails (an architecture Dynamo cannot trace, an adapter), or a padded minibatch runs out of memory
(padding to the bucket can nearly double a (batch, tokens, vocabulary) tensor), the updates go on eagerly and one
logged line says why; the update in progress is redone eagerly from its start (the backward is lowered with the
forward, so no gradient has flowed; an error at run time in a compiled backward is not caught). With dropout
on in the updates (``objective.disable_dropout=false``) the failed attempt has drawn from the random stream, so
the run goes on eagerly but not as an eager run from the start would; a rescoring compiled before the failure
leaves that one round's first ratio equal to 1 to float rounding only. With several processes (DDP, FSDP) the updates stay eager: compiled modules inside a
distributed wrapper are not what this path was measured on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from minillm.errors import MinillmError
from minillm.rollout.sampler import Rollout, response_logits, sampled_logprobs
from minillm.rollout.static_decode import length_bucket, one_line, own_code, unique_graphs

log = logging.getLogger(__name__)

BACKEND = "inductor"  # torch.compile's backend ("aot_eager" in tests: AOTAutograd without code generation)
# graphs per compiled function before Dynamo gives up and runs it eagerly (torch's default is 8): one per shape
# bucket (rows × prompt bucket × response bucket)
RECOMPILE_LIMIT = 64
# A minibatch's prompt and response columns are padded to this times a power of two (masked: the same values to
# float rounding), so that a fit compiles a few shapes, not one per response length: the loss's return-to-go is
# a loop over positions, which Dynamo unrolls, so the response length cannot be left dynamic.
MIN_BUCKET = 16


@contextlib.contextmanager
def _deterministic(first: Tensor | Rollout):
    """On CPU, compile and run with torch's deterministic algorithms (warnings only): inductor then lowers an
    accumulating scatter (the embedding's gradient) to torch's own kernel, serial on CPU, instead of a parallel
    loop of atomic adds, whose order changed between runs at 2 threads (the same seed trained other last bits).
    The setting is the same at every call, so it is no reason to recompile; elsewhere nothing changes."""
    tensor = first if isinstance(first, Tensor) else first.response_ids
    if tensor.device.type != "cpu" or torch.are_deterministic_algorithms_enabled():
        yield
        return
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # no NaN fill of every new buffer
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)
        torch.utils.deterministic.fill_uninitialized_memory = fill


class FellBack(Exception):
    """Compiling a pass failed just now (logged): the passes are eager from here on, and the update in progress
    is to be redone eagerly from its start (no gradient has flowed yet)."""


def student_pass(model: nn.Module, mb: Rollout, logprobs: bool) -> tuple[Tensor, Tensor | None]:
    """The student's (B, T, V) logits at the response positions of ``mb`` and, with ``logprobs``, the (B, T)
    float32 log-probs of its sampled tokens."""
    logits = response_logits(model, mb)
    return logits, sampled_logprobs(logits, mb.response_ids) if logprobs else None


def padded(mb: Rollout) -> Rollout:
    """``mb`` with its prompt columns left-padded and its response columns right-padded to their buckets:
    padding ids under a zero mask, and zeros in every per-token record (the teacher's kept logits too), so
    every masked loss and statistic is the same to float rounding (tested). Every tensor comes out contiguous (Dynamo guards on strides)."""
    prompt, response = mb.prompt_ids.shape[1], mb.response_ids.shape[1]
    left = length_bucket(prompt, MIN_BUCKET) - prompt
    right = length_bucket(response, MIN_BUCKET) - response
    if left == 0 and right == 0:  # contiguous all the same: a trimmed view's strides would be a new shape
        return mb._map(lambda t: t.contiguous())

    def pad(value: Tensor | None, before: int, after: int, fill: float | int = 0) -> Tensor | None:
        if value is None:
            return None
        # dimension 1 (the columns) of a (B, L) or (B, L, V) tensor: F.pad's widths run from the last dimension
        if before == 0 and after == 0:
            return value.contiguous()
        widths = [0, 0] * (value.dim() - 2) + [before, after]
        return torch.nn.functional.pad(value, widths, value=fill)

    return dataclasses.replace(
        mb,
        prompt_ids=pad(mb.prompt_ids, left, 0, mb.pad_token_id),
        prompt_mask=pad(mb.prompt_mask, left, 0),
        response_ids=pad(mb.response_ids, 0, right, mb.pad_token_id),
        response_mask=pad(mb.response_mask, 0, right),
        student_logprobs=pad(mb.student_logprobs, 0, right),
        teacher_logprobs=pad(mb.teacher_logprobs, 0, right),
        mix_logprobs=pad(mb.mix_logprobs, 0, right),
        teacher_logits=pad(mb.teacher_logits, 0, right),
    )


class UpdatePasses:
    """The update's passes for one student and loss.

    Args:
        student: the trained model (its teacher-forced pass).
        loss: ``loss(logits, teacher_logits, minibatch, logprobs) -> (loss, logs)``.
        logprobs: whether ``loss`` reads the log-probs of the sampled tokens (the compiled student's pass then
            computes them, and rescoring takes them from the same graph).
        compiled: run both passes under ``torch.compile``; ``why_not``: the reason they may not (one line,
            logged once), which keeps them eager.
    """

    def __init__(
        self,
        student: nn.Module,
        loss: Callable,
        *,
        logprobs: bool,
        compiled: bool = False,
        why_not: str | None = None,
    ) -> None:
        self.student, self.eager_loss, self.logprobs = student, loss, logprobs
        self.failed: str | None = None  # why compiling failed (the passes then run eagerly)
        # from the first compiled call (a rescoring's, or the first update's) to the end of the first update:
        # the compile, logged once
        self.first_seconds: float | None = None
        self._first_call: float | None = None
        self._update_start: tuple | None = (
            None  # (graphs compiled so far, when, minibatch shape) of a later update
        )
        self.compiled = bool(compiled) and why_not is None
        if compiled and why_not is not None:
            log.warning("fit.compile_updates: %s; the updates run eagerly", why_not)
        if not self.compiled:
            return
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)

        def forward(mb: Rollout) -> tuple[Tensor, Tensor | None]:
            return student_pass(student, mb, logprobs)

        def compiled_loss(logits, teacher_logits, mb, logprobs_):
            return loss(logits, teacher_logits, mb, logprobs_)

        # static shapes: one graph per bucket (dynamic=False keeps Dynamo from retracing a changed length as
        # dynamic, which the unrolled return-to-go would specialise again)
        # inductor draws random numbers (dropout, with objective.disable_dropout=false) with eager's kernels from
        # the same generator, as eager updates do, not with its own: the same masks for a seed
        options = {"fallback_random": True} if BACKEND == "inductor" else None
        self._forward = torch.compile(
            own_code(forward, "update_forward"), backend=BACKEND, dynamic=False, options=options
        )
        self._loss = torch.compile(
            own_code(compiled_loss, "update_loss"), backend=BACKEND, dynamic=False, options=options
        )
        log.info(
            "fit.compile_updates: the student's teacher-forced pass and the loss compile at the first update "
            "(torch.compile, %s)",
            BACKEND,
        )

    @property
    def active(self) -> bool:
        """Whether the passes run compiled now."""
        return self.compiled and self.failed is None

    def shaped(self, mb: Rollout) -> Rollout:
        """The minibatch the passes take: padded to its shape bucket while compiled (:func:`padded`), else as
        it is."""
        return padded(mb) if self.active else mb

    def forward(self, mb: Rollout) -> tuple[Tensor, Tensor | None]:
        """``student_pass`` of the minibatch: compiled while :attr:`active` (raising :class:`FellBack` where
        compiling fails: the caller redoes the update eagerly, on the minibatch unpadded), with the sampled
        tokens' log-probs where the loss reads them; else eagerly, the logits alone (the loss takes the
        log-probs itself, after the teacher's pass, as it always has: the same numbers and peak memory)."""
        if self.active:
            # a later update (with any rescoring before it): a new shape bucket's compile is logged after it
            if self.first_seconds is not None and self._update_start is None:
                shape = (mb.response_ids.shape[0], mb.prompt_ids.shape[1], mb.response_ids.shape[1])
                self._update_start = (unique_graphs(), time.perf_counter(), shape)
            return self._compiled_call(self._forward, mb)
        return student_pass(self.student, mb, False)

    def loss(self, logits: Tensor, teacher_logits: Tensor, mb: Rollout, logprobs: Tensor | None):
        """The loss of the minibatch: compiled while :attr:`active` (or :class:`FellBack`), else eagerly."""
        if self.active:
            value, logs = self._compiled_call(self._loss, logits, teacher_logits, mb, logprobs)
            if logits.requires_grad and not value.requires_grad:  # a compiler bug dropped the loss's graph
                self.fail(RuntimeError("the compiled loss came back without a gradient"))
                raise FellBack(self.failed)
            return value, logs
        return self.eager_loss(logits, teacher_logits, mb, logprobs)

    def _compiled_call(self, fn: Callable, *args):
        if self._first_call is None:
            self._first_call = time.perf_counter()
        try:
            # the backward compiles now, with the forward (not at the first backward, past the fallback)
            with (
                torch._functorch.config.patch(force_non_lazy_backward_lowering=True),
                _deterministic(args[0]),
            ):
                return fn(*args)
        except MinillmError:
            raise
        except Exception as err:  # any other error while compiling or running: eager from now on, said once
            # (an error of the model itself comes back from the eager rerun, as it would have without compiling;
            # out of memory too: the padded minibatch may need more than the unpadded one the rerun takes)
            self.fail(err)
            raise FellBack(self.failed) from err

    def fail(self, err: BaseException) -> None:
        """Run eagerly from now on, and say why in one line."""
        self.failed = one_line(err)
        log.warning(
            "fit.compile_updates: the compiled update failed (%s); the updates run eagerly", self.failed
        )

    def first_update_done(self) -> None:
        """After each update: the first compiled one records (and logs once) the seconds since the first
        compiled call, its compiling included; a later one that compiled a shape bucket not seen before logs its
        seconds too (a pause of seconds to a minute that would otherwise look like a hang)."""
        started, self._update_start = self._update_start, None
        if self.active and started is not None and unique_graphs() > started[0]:
            log.info(
                "fit.compile_updates: an update of a new shape bucket (%d rows, %d prompt and %d response columns) "
                "took %.1f s, compiling included",
                *started[2],
                time.perf_counter() - started[1],
            )
        if self.active and self.first_seconds is None and self._first_call is not None:
            # what compiling left behind is collected now, with the compile, not in a pause of a later update
            gc.collect()
            self.first_seconds = time.perf_counter() - self._first_call
            log.info(
                "fit.compile_updates: the first update (and any rescoring before it) took %.1f s, compiling "
                "included",
                self.first_seconds,
            )
