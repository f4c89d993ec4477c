"""Hydra entry point: ``python -m minillm.run [group=choice ...] [key=value ...]``.

``train(cfg)`` is one run, top to bottom: validate → data, tokenizer, models → the baseline rows of the
table → the objective's module, loggers and trainer (all instantiated from the config) → fit → select the
best checkpoint → evaluate the trained student → ``results.json``.

Returns the run's ``test/rougeL`` to a Hydra sweeper, so Optuna and other sweepers can optimise it.
In a multirun a failing job is recorded (``failed.json`` in its folder, one line on stderr) and the
sweep goes on; ``python -m minillm.report`` lists it.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from minillm.cli import hydra_app, quiet_libraries
from minillm.errors import MinillmError, RunInterrupted

if TYPE_CHECKING:
    import lightning as L

quiet_libraries()
log = logging.getLogger("minillm.run")


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(cfg: DictConfig, err: Exception) -> None:
    """Write the job's error into its folder and say it in one line; the sweep goes on."""
    from minillm.resume.run_folder import earlier_work

    folder = Path(cfg.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    message = str(err) if isinstance(err, MinillmError) else f"{type(err).__name__}: {err}"
    if earlier_work(folder):  # a sweep run again into its folder: each finished job's files stay as they were
        print(
            f"error: job {cfg.get('run_name')} failed: {message} (its folder holds an earlier run: nothing "
            "recorded there)",
            file=sys.stderr,
            flush=True,
        )
        return
    (folder / "failed.json").write_text(
        json.dumps(
            {
                "error": message,
                "type": type(err).__name__,
                "run_name": str(cfg.get("run_name")),
                "traceback": None if isinstance(err, MinillmError) else traceback.format_exc(),
            },
            indent=2,
        )
    )
    print(
        f"error: job {cfg.get('run_name')} failed: {message} (recorded in {folder / 'failed.json'})",
        file=sys.stderr,
        flush=True,
    )


def train(cfg: DictConfig) -> dict:
    """Run one configuration end to end; returns (and writes) results.json."""
    import lightning as L
    import torch
    from lightning.pytorch.utilities import rank_zero_only

    from minillm.config import validate_config
    from minillm.data.datamodule import InstructionDataModule, load_records
    from minillm.evaluation.callbacks import check_monitor, make_eval_callbacks
    from minillm.evaluation.sampled import eval_subset, evaluate_splits
    from minillm.loggers import loggers_from_config
    from minillm.models.loading import cast_teacher, gathered_student, load_models, weights_digest
    from minillm.models.lora import export_student
    from minillm.models.prepare import prepare_models
    from minillm.models.tokenizers import resolve_tokenizer
    from minillm.resume.run_folder import Resume, undo_hydra_writes
    from minillm.rollout import vllm_engine
    from minillm.safe_load import load_checkpoint
    from minillm.training.precision import resolve_precision
    from minillm.training.trainer import build_module, fit, make_trainer, module_class

    try:
        validate_config(cfg)
        check_monitor(cfg)  # before any model loads: a metric nothing logs would fail at the first validation
        prepare_models(cfg)  # GGUF presets converted, pruned students made: once, into cache_dir/models
        vllm_engine.configure(cfg)  # sampler=vllm: the engine (started on first use); hf: none
        resume = Resume.plan(cfg)  # the run folder and the checkpoint it goes on from, read and checked
    except MinillmError:
        undo_hydra_writes()  # a refused resume leaves its folder's .hydra/ and log as they were
        raise
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")
    if cfg.fit.get("num_threads"):
        torch.set_num_threads(int(cfg.fit.num_threads))  # 1 is faster for tiny models on a busy CPU

    records = load_records(cfg.data, cfg.cache_dir)
    tokenizer = resolve_tokenizer(cfg, records)
    student, teacher = load_models(cfg, tokenizer)
    # trainer.precision=auto: bf16-mixed or 32-true, measured on this machine before Lightning sees it
    if resolve_precision(cfg, student) is not None and teacher is not None:
        cast_teacher(cfg, teacher)  # fit.teacher_dtype=auto follows the precision chosen
    dm = InstructionDataModule(
        cfg.data,
        tokenizer,
        records,
        seed=cfg.seed,
        train_mode=module_class(cfg).train_data,
        prompt_batch_size=cfg.objective.get("num_rollouts"),
    )
    # data-parallel (strategy=ddp/fsdp): every rank trains; only rank zero evaluates and writes
    zero = rank_zero_only.rank == 0
    for split in cfg.eval.splits if zero else ():
        eval_subset(dm.examples[split], cfg.eval.num_samples, split)  # one line if the split is smaller
    table: dict[str, dict] = {}  # the end-of-run table: teacher and init first (cached: fixed models)
    if zero and cfg.eval.compare and teacher is not None:
        table["teacher"] = evaluate_splits(cfg, teacher, tokenizer, dm, "teacher", cache=True)
    if zero and cfg.eval.compare:
        init_cached = bool(cfg.student.get("path"))
        table["student init"] = evaluate_splits(
            cfg, student, tokenizer, dm, "student init", cache=init_cached
        )
    if cfg.objective.get("train_on_teacher_samples"):  # SeqKD
        from minillm.data.seqkd import sampling_device, teacher_samples
        from minillm.training.precision import autocast

        # under the run's mixed precision, as its rollouts and evaluations
        with autocast(cfg.trainer.get("precision"), sampling_device(cfg)):
            dm.replace_train_responses(teacher_samples(cfg, teacher, tokenizer, dm))

    module = build_module(cfg, student, teacher, tokenizer, dm)
    loggers = loggers_from_config(cfg, resume.run_dir, resume_step=resume.attach(cfg, module, dm))
    trainer, checkpoint = make_trainer(cfg, loggers, make_eval_callbacks(cfg, dm, tokenizer, teacher))
    train_seconds = fit(cfg, trainer, module, dm, resume.ckpt_path, loggers)
    try:  # after training: Ctrl-C here (no stop handler runs) says how to evaluate again, without a traceback
        student = gathered_student(module, cfg, tokenizer)  # strategy=fsdp: the shards gathered on every rank
        final_weights = weights_digest(student)  # the weights training ended with (before best selection)
        if not zero:
            return {"global_step": trainer.global_step, "final_weights_sha1": final_weights}
        student_params = sum(p.numel() for p in student.parameters())  # with LoRA: base and adapters
        trained_params = sum(p.numel() for p in student.parameters() if p.requires_grad)

        if checkpoint.best_model_path:
            log.info(
                "selected %s (%s=%s)",
                checkpoint.best_model_path,
                cfg.select.monitor,
                None if checkpoint.best_model_score is None else f"{float(checkpoint.best_model_score):.4g}",
            )
            module.load_state_dict(load_checkpoint(checkpoint.best_model_path)["state_dict"])
        if cfg.select.get(
            "save_hf", True
        ):  # a LoRA student: merged, or adapters + base (student.lora.export)
            student = export_student(
                student, tokenizer, resume.run_dir / "best_model", cfg.student.get("lora")
            )
        table["trained student"] = evaluate_splits(cfg, student, tokenizer, dm, "trained student")

        results = {
            "config": {
                "objective": cfg.objective.name,
                "seed": cfg.seed,
                "run_name": cfg.run_name,
                "teacher": cfg.teacher.get("path"),
                "student": cfg.student.get("path"),
                "student_params": student_params,
                "student_trained_params": trained_params,  # fewer than student_params with LoRA (the adapters)
                "teacher_params": None if teacher is None else sum(p.numel() for p in teacher.parameters()),
            },
            "train_seconds": round(module.seconds_before + train_seconds, 1),  # a resumed run: every segment
            "global_step": trainer.global_step,
            "final_weights_sha1": final_weights,
            "best_checkpoint": checkpoint.best_model_path or None,
            "best_score": None if checkpoint.best_model_score is None else float(checkpoint.best_model_score),
            "eval": table,
        }
        write_results(cfg, resume.run_dir, results, loggers, trainer)
        return results
    except KeyboardInterrupt:
        import signal

        last = resume.run_dir / "checkpoints" / "last.ckpt"
        raise RunInterrupted(last, trainer.global_step, signal.SIGINT) from None


def write_results(cfg: DictConfig, run_dir: Path, results: dict, loggers: list, trainer: L.Trainer) -> None:
    """Add the headline metrics, log them, write results.json and config.yaml, print the table."""
    from omegaconf import OmegaConf

    from minillm.evaluation.table import format_comparison, format_table, headline_metrics

    split = cfg.eval.splits[0]
    results.update(headline_metrics(results["eval"], split))
    for lg in loggers:
        lg.log_metrics(  # scalars only: the intervals ([lo, hi]) are in results.json
            {
                k: v
                for k, v in results.items()
                if "/" in k and isinstance(v, int | float) and not isinstance(v, bool)
            },
            step=trainer.global_step,
        )
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    used = next((row[split]["n"] for row in results["eval"].values() if split in row), 0)
    print(
        f"\n{split} split, {used} prompts, seeds {list(cfg.eval.seeds)}:"
    )  # as evaluated (a smaller split: all)
    print(format_table(results["eval"], split))
    comparison = format_comparison({k: v for k, v in results.items() if k.startswith("compare/")}, split)
    if comparison:
        print(comparison)
    print(f"results: {run_dir / 'results.json'}")
    for lg in loggers:
        lg.finalize("success")


def train_task(cfg: DictConfig) -> float | None:
    """``task``'s default: the distillation pipeline; its test Rouge-L goes back to a sweeper."""
    return train(cfg).get("test/rougeL")


def run_task(cfg: DictConfig) -> float | None:
    """``cfg.task`` (a ``_partial_`` function of the config: the pipeline or a toy problem) on the config."""
    from minillm.instantiate import check_call, instantiate_node

    task = instantiate_node(cfg.get("task"), "task")
    check_call(task, "task", cfg)
    return task(cfg)


@hydra_app("config")
def main(cfg: DictConfig) -> float | None:
    if not in_multirun():
        return run_task(cfg)
    try:
        return run_task(cfg)
    except RunInterrupted:
        raise  # a stop the user asked for (Ctrl-C, SIGTERM) stops the sweep too, with its checkpoint
    except Exception as err:  # one job of a sweep: record it, let the others run
        record_failure(cfg, err)
        return float("nan")


if __name__ == "__main__":
    # task._target_ names minillm.run.train_task: let it find this module, not import a second copy
    sys.modules.setdefault("minillm.run", sys.modules["__main__"])
    main()
