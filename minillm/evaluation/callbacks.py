"""Cheap behaviour metrics during training, as a Lightning callback (config: ``eval.callbacks``).

On a small fixed subset of the validation split, every ``every_n_val``-th validation run logs:

- ``val/exaccerr``: exposure bias, ExAccErr averaged over steps (``minillm.evaluation.exposure``), from
  ``n_prompts`` prompts × ``samples_per_prompt`` samples of the student and of the teacher;
- ``val/ece`` and ``val/label_acc``: calibration on ``n_calibration`` classification records;
- ``val/distinct4``: Distinct-4 of one sampled response per prompt.

Each is a ``select.monitor`` candidate (``select.monitor=val/ece select.mode=min``). With
``every_n_val`` > 1 a metric keeps its last value in between, which never wins a strict comparison, so
checkpoints are only selected at the validation runs where it was computed.
"""

from __future__ import annotations

import logging

import torch
from lightning.pytorch.callbacks import Callback

from minillm.data.datasets import Example
from minillm.data.template import PromptTemplate
from minillm.errors import MinillmError
from minillm.evaluation.calibration import calibration, items_from_records
from minillm.evaluation.exposure import exposure_bias
from minillm.evaluation.metrics import distinct_n
from minillm.rollout.generate import sample_responses
from minillm.rollout.options import SamplingOptions

log = logging.getLogger(__name__)
# each behaviour metric (eval.callbacks.metrics) and the names it logs
CALLBACK_LOGS = {
    "exaccerr": ("val/exaccerr",),
    "ece": ("val/ece", "val/label_acc"),
    "distinct4": ("val/distinct4",),
}
CALLBACK_METRICS = tuple(CALLBACK_LOGS)


class BehaviourMetricsCallback(Callback):
    """Logs ``val/exaccerr``, ``val/ece`` (+ ``val/label_acc``) and ``val/distinct4`` on a fixed subset.

    Args:
        tokenizer: the shared tokenizer (pad and EOS ids).
        prompts: validation examples for ExAccErr and Distinct-4 (fixed across runs).
        calibration_items: classification items (``calibration.items_from_records``) for ECE.
        template: the prompt template of the data.
        teacher: the frozen teacher (ExAccErr is skipped without one).
        every_n_val: compute on validation runs 0, N, 2N, … (sanity checks never count).
        metrics: any of ``CALLBACK_METRICS``.
        samples_per_prompt, max_new_tokens, batch_size, seed, bins: sampling and binning settings.
    """

    def __init__(
        self,
        *,
        tokenizer,
        prompts: list[Example],
        calibration_items: list[dict],
        template: PromptTemplate,
        teacher=None,
        every_n_val: int = 1,
        metrics=CALLBACK_METRICS,
        samples_per_prompt: int = 2,
        max_new_tokens: int = 32,
        batch_size: int = 32,
        seed: int = 0,
        bins: int = 10,
    ):
        unknown = [m for m in metrics if m not in CALLBACK_METRICS]
        if unknown:
            raise MinillmError(
                f"eval.callbacks.metrics: unknown {unknown}; choose from {list(CALLBACK_METRICS)}"
            )
        if not isinstance(every_n_val, int) or every_n_val < 1:
            raise MinillmError(f"eval.callbacks.every_n_val={every_n_val!r}: must be a positive integer")
        self.tokenizer = tokenizer
        self.prompts = list(prompts)
        self.items = list(calibration_items)
        self.template = template
        self.teacher = teacher
        self.every_n_val = every_n_val
        self.metrics = tuple(metrics)
        self.samples_per_prompt = samples_per_prompt
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.seed = seed
        self.bins = bins
        self.val_runs = 0
        if "exaccerr" in self.metrics and teacher is None:
            log.warning("eval.callbacks: no teacher is loaded in this run, so val/exaccerr is not logged")
        if "ece" in self.metrics and not self.items:
            log.warning(
                "eval.callbacks: no classification records in the valid split, so val/ece is not logged"
            )

    @staticmethod
    def logged_metrics(cfg) -> tuple[str, ...]:
        """The names this callback logs under ``cfg`` (none when ``eval.callbacks`` is off)."""
        c = cfg.eval.get("callbacks")
        if not c or not c.get("enabled", False):
            return ()
        return tuple(name for m in c.metrics if m in CALLBACK_LOGS for name in CALLBACK_LOGS[m])

    def on_fit_start(self, trainer, pl_module):
        if self.teacher is not None:
            self.teacher.to(pl_module.device)

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        run, self.val_runs = self.val_runs, self.val_runs + 1
        if run % self.every_n_val:
            return
        student = getattr(pl_module, "student", pl_module)
        for name, value in self.compute(student).items():
            if value is not None:
                pl_module.log(name, float(value))

    def compute(self, student) -> dict[str, float | None]:
        """The metrics on the fixed subset for ``student``, keyed by their logged names."""
        out: dict[str, float | None] = {}
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        if "exaccerr" in self.metrics and self.teacher is not None and self.prompts:
            curve = exposure_bias(
                student,
                self.teacher,
                self.prompts,
                pad_token_id=pad,
                eos_token_id=eos,
                samples_per_prompt=self.samples_per_prompt,
                max_new_tokens=self.max_new_tokens,
                batch_size=self.batch_size,
                seed=self.seed,
            )
            (name,) = CALLBACK_LOGS["exaccerr"]
            out[name] = curve["exaccerr_mean"]
        if "ece" in self.metrics and self.items:
            cal = calibration(
                student,
                self.tokenizer,
                self.items,
                self.template,
                batch_size=self.batch_size,
                n_bins=self.bins,
                keep_records=False,
            )
            ece, accuracy = CALLBACK_LOGS["ece"]
            out[ece], out[accuracy] = cal["ece"], cal["accuracy"]
        if "distinct4" in self.metrics and self.prompts:
            texts, _ = sample_responses(
                student,
                self.tokenizer,
                self.prompts,
                SamplingOptions(max_new_tokens=self.max_new_tokens, eos_token_id=eos, pad_token_id=pad),
                batch_size=self.batch_size,
                seed=self.seed,
                progress=False,
            )
            (name,) = CALLBACK_LOGS["distinct4"]
            out[name] = distinct_n(texts, 4)
        return out

    def state_dict(self) -> dict:
        return {"val_runs": self.val_runs}

    def load_state_dict(self, state_dict: dict) -> None:
        self.val_runs = int(state_dict.get("val_runs", 0))


ROUGE, VALIDITY, LENGTH = SAMPLED_METRICS = ("val/rougeL", "val/valid_rate", "val/length")  # generations


def check_sampled_monitor(cfg, val_examples, val_records) -> None:
    """Refuse, before training, a ``select.monitor`` on sampled validation metrics that no validation
    will log (Lightning would stop at the first validation with a traceback)."""
    monitor = str(cfg.select.monitor)
    if monitor not in SAMPLED_METRICS:
        return
    if not val_examples:
        raise MinillmError(
            f"select.monitor={monitor}: needs validation generations, but eval.val_samples="
            f"{cfg.eval.val_samples} and {len(val_examples)} valid prompts are sampled; set eval.val_samples > 0"
        )
    if monitor == "val/valid_rate" and not any(val_records[e.index].get("check") for e in val_examples):
        raise MinillmError(
            f"select.monitor=val/valid_rate: none of the first {len(val_examples)} valid prompts "
            "(eval.val_samples) has a validity checker ('check'), so val/valid_rate is never logged"
        )


class SampledValidation(Callback):
    """``val/rougeL``, ``val/valid_rate`` and ``val/length`` at every validation: the student's samples
    for a fixed slice (the first ``eval.val_samples`` valid prompts) with a fixed seed, so the curves move
    only with the weights; scored by :func:`minillm.evaluation.sampled.evaluate_model`."""

    def __init__(self, cfg, tokenizer, examples: list[Example], records: list[dict]):
        self.examples = list(examples)[: cfg.eval.val_samples or 0]
        check_sampled_monitor(cfg, self.examples, records)
        self.records, self.tokenizer, self.eval_cfg = records, tokenizer, cfg.eval

    @staticmethod
    def logged_metrics(cfg) -> tuple[str, ...]:
        """The names this callback logs under ``cfg`` (val/valid_rate only for prompts with a checker)."""
        return SAMPLED_METRICS

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self.examples or trainer.sanity_checking:
            return
        from minillm.training.precision import autocast

        # under the run's mixed precision, as the rest of validation (this hook is outside Lightning's)
        with autocast(trainer.precision, pl_module.device.type):
            res = self.metrics(pl_module.student, *_data_parallel_ranks(trainer))
        pl_module.log(ROUGE, res["rougeL"], prog_bar=True)
        if res["valid_rate"] is not None:
            pl_module.log(VALIDITY, res["valid_rate"])
        pl_module.log(LENGTH, res["length"])

    def metrics(self, student, rank: int = 0, world: int = 1) -> dict:
        """``evaluate_model`` on the slice, its batches dealt to the ``world`` data-parallel ranks and
        gathered (:func:`~minillm.evaluation.sampled.sample_sharded`): every rank gets what one process
        computes, each sampling its share of the prompts."""
        from functools import partial

        from minillm.evaluation.sampled import EvaluationOptions, evaluate_model, sample_sharded

        e = self.eval_cfg
        return evaluate_model(
            student,
            self.tokenizer,
            self.examples,
            self.records,
            EvaluationOptions.from_config(e, self.tokenizer, seeds=(0,)),
            name="val",
            progress=False,
            sampler=partial(sample_sharded, rank=rank, world=world),
        )


def _data_parallel_ranks(trainer) -> tuple[int, int]:
    """(rank, world size) to shard validation over: DDP's ranks. One process, or FSDP (whose decoding runs
    in lockstep on every rank: each samples all the prompts, as before), is (0, 1)."""
    from lightning.pytorch.strategies import DDPStrategy

    world = int(trainer.world_size)
    if world > 1 and isinstance(trainer.strategy, DDPStrategy) and torch.distributed.is_initialized():
        return int(trainer.global_rank), world
    return 0, 1


def make_eval_callbacks(cfg, datamodule, tokenizer, teacher) -> list[Callback]:
    """The validation callbacks: the behaviour metrics that ``eval.callbacks`` asks for (none when
    ``enabled`` is false or the node is absent), then the sampled validation metrics (:class:`SampledValidation`)."""
    sampled = SampledValidation(cfg, tokenizer, datamodule.examples["valid"], datamodule.records["valid"])
    c = cfg.eval.get("callbacks")
    if not c or not c.get("enabled", False):
        return [sampled]
    prompts = datamodule.examples["valid"][: c.n_prompts]
    items = items_from_records(datamodule.records["valid"])[: c.n_calibration]
    return [
        BehaviourMetricsCallback(
            tokenizer=tokenizer,
            prompts=prompts,
            calibration_items=items,
            template=PromptTemplate.from_name(cfg.data.template, tokenizer),
            teacher=teacher,
            every_n_val=c.every_n_val,
            metrics=tuple(c.metrics),
            samples_per_prompt=c.samples_per_prompt,
            max_new_tokens=c.max_new_tokens,
            batch_size=c.batch_size,
            seed=c.seed,
            bins=c.bins,
        ),
        sampled,
    ]


def monitor_candidates(cfg) -> list[str]:
    """The validation metrics a run with ``cfg`` can log, from the classes that log them: the objective's
    module (``objective.module``), the sampled validation, the behaviour metrics, and any ``callbacks.*``
    class that declares ``logged_metrics(cfg)``."""
    from hydra.utils import get_class

    from minillm.training.trainer import module_class

    sources = [module_class(cfg), SampledValidation, BehaviourMetricsCallback]
    for node in (cfg.get("callbacks") or {}).values():
        try:
            sources.append(get_class(str(node.get("_target_"))))
        except Exception:  # not a class: make_trainer names the node
            continue
    names = [n for source in sources if hasattr(source, "logged_metrics") for n in source.logged_metrics(cfg)]
    return list(dict.fromkeys(names))


def check_monitor(cfg) -> None:
    """Refuse, before any model loads, a ``select.monitor`` that no part of this run logs. Training
    metrics (``train/…``, ``rollout/…``: they depend on the objective's options) are left to Lightning."""
    monitor = str(cfg.select.monitor)
    if monitor.startswith(("train/", "rollout/")):
        return
    names = monitor_candidates(cfg)
    if monitor not in names:
        raise MinillmError(
            f"select.monitor={monitor}: objective={cfg.objective.name} never logs it; choose one of "
            f"{names} (eval.callbacks.enabled=true adds {[n for v in CALLBACK_LOGS.values() for n in v]})"
        )
