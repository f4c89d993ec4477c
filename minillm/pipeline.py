"""One run, top to bottom: data → tokenizer → models → (SeqKD samples) → training → evaluation.

``train(cfg)`` is what ``python -m minillm.run`` calls; it returns the results dictionary that is also
written to ``results.json`` in the run directory.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import OmegaConf, open_dict

from minillm.data.datamodule import InstructionDataModule, load_records
from minillm.errors import MinillmError
from minillm.evaluation.callbacks import make_eval_callbacks
from minillm.evaluation.sampled import evaluate_model, sampling_settings
from minillm.evaluation.table import compare_to_init, format_comparison, format_table
from minillm.loggers import loggers_from_config
from minillm.models.loading import (
    check_same_tokenizer,
    check_same_vocab,
    freeze,
    load_model,
)
from minillm.models.tokenizers import resolve_tokenizer
from minillm.resume import (
    AtomicCheckpointIO,
    RunInterrupted,
    check_checkpoint,
    check_config,
    fix_epoch_end_checkpoint,
    read_checkpoint,
    resolve_ckpt_path,
)
from minillm.safe_load import load_checkpoint

log = logging.getLogger(__name__)


def lightning_config_error(err: Exception, cfg) -> Exception:
    """Lightning's complaints about a trainer setting, as one line naming the config key; anything else
    is returned unchanged (a real bug keeps its traceback)."""
    text = " ".join(str(err).split())
    if "val_check_interval" in text:
        batches = re.search(r"training batches \((\d+)\)", text)
        limit = f" ({batches.group(1)} per epoch here)" if batches else ""
        return MinillmError(
            f"trainer.val_check_interval={cfg.trainer.val_check_interval}: must not exceed the training "
            f"batches per epoch{limit}; use a smaller number or a fraction of an epoch such as 0.5"
        )
    if "could not find the monitored key" in text:
        logged = re.search(r"returned metrics: (\[.*?\])", text)
        return MinillmError(
            f"select.monitor={cfg.select.monitor}: this run never logs that metric"
            + (f" (it logs {logged.group(1)})" if logged else "")
        )
    return err


TEACHER_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def objective_needs_teacher(cfg) -> bool:
    return bool(cfg.objective.get("needs_teacher", False)) or float(cfg.objective.get("kd_ratio", 0) or 0) > 0


def module_class(cfg):
    """The LightningModule class ``objective.module._target_`` names (its ``train_data`` says what the
    datamodule's training batches hold)."""
    target = cfg.objective.get("module", {}).get("_target_")
    try:
        return get_class(str(target))
    except Exception:
        raise MinillmError(
            f"objective.module._target_={target!r}: not an importable LightningModule class "
            "(e.g. minillm.training.supervised.SupervisedModule)"
        ) from None


def teacher_dtype(cfg) -> torch.dtype | None:
    """``fit.teacher_dtype``: auto = the half type of a bf16 / fp16 mixed precision, else as loaded."""
    choice = OmegaConf.select(cfg, "fit.teacher_dtype", default="auto")
    if choice in (None, "auto"):
        precision = str(cfg.trainer.precision)
        choice = "bf16" if precision.startswith("bf16") else "fp16" if precision.startswith("16") else None
    return TEACHER_DTYPES[choice] if choice else None


def redirect_run_dir(cfg, run_dir: Path) -> None:
    """Point ``output_dir`` and every callback folder under it (the checkpoints) at ``run_dir``."""
    old = Path(cfg.output_dir)
    with open_dict(cfg):
        cfg.output_dir = str(run_dir)
        for node in cfg.callbacks.values():
            folder = node.get("dirpath")
            if folder and Path(folder).is_relative_to(old):
                node.dirpath = str(run_dir / Path(folder).relative_to(old))


def make_trainer(cfg, loggers, extra_callbacks=()) -> tuple[L.Trainer, ModelCheckpoint]:
    """``trainer`` (lightning.Trainer's arguments, whole) with the ``callbacks`` node's callbacks, the
    loggers and the atomic checkpoint writer; returns it with the ModelCheckpoint that selects the run's
    student (the one monitoring ``select.monitor``)."""
    callbacks = []
    for name, node in cfg.callbacks.items():
        try:
            callbacks.append(instantiate(node, _convert_="all"))
        except Exception as err:
            cause = err.__cause__ or err
            raise MinillmError(f"callbacks.{name}: cannot build {node.get('_target_')!r} ({cause})") from None
    callbacks.extend(extra_callbacks)
    selecting = [
        c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor == str(cfg.select.monitor)
    ]
    if not selecting:
        raise MinillmError(
            f"callbacks: no ModelCheckpoint monitors select.monitor={cfg.select.monitor} "
            "(the run selects its student with it)"
        )
    trainer = instantiate(cfg.trainer, _convert_="all")(
        logger=loggers,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(cfg.output_dir),
    )
    return trainer, selecting[0]


def resume_log_step(ckpt: dict) -> int:
    """The logging step training goes on from: metrics logged at or after it are logged again."""
    meta = ckpt.get("minillm") or {}
    if meta.get("log_step") is not None:  # stopped between updates (a signal or fit.stop_at_step)
        return int(meta["log_step"])
    loop = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    # saved by ModelCheckpoint after a batch's update, before Lightning counted it (Lightning adds 1)
    return int(loop.get("_batches_that_stepped", 0)) + 1


def continue_csv(source: Path, run_dir: Path) -> None:
    """``ckpt_path=last`` picked a run beside this one: this run's CSV starts with that run's rows (those
    after the checkpoint are dropped by the logger); that run's folder is only read."""
    src, dst = source / "csv" / "metrics.csv", run_dir / "csv" / "metrics.csv"
    if src.is_file() and not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def evaluate_splits(cfg, model, tokenizer, dm, name: str, *, cache: bool = False) -> dict:
    """One row of the end-of-run table: ``evaluate_model`` on each split in eval.splits (its first
    eval.num_samples prompts). ``cache`` (the fixed teacher and a student init read from a path) reuses
    the evaluation stored under ``cache_dir/eval/``."""
    e = cfg.eval
    return {
        split: evaluate_model(
            model,
            tokenizer,
            dm.examples[split][: e.num_samples] if e.num_samples else dm.examples[split],
            dm.records[split],
            name=name,
            cache_dir=cfg.cache_dir if cache else None,
            **sampling_settings(e),
        )
        for split in e.splits
    }


def train(cfg) -> dict:
    """Run one configuration end to end; returns (and writes) results.json."""
    from minillm.config import validate_config

    validate_config(cfg)
    run_dir = Path(cfg.output_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    allow_change = bool((cfg.get("resume") or {}).get("allow_config_change", False))
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir, config, allow_change)
    explicit = ckpt_path is not None and str(cfg.get("ckpt_path")) != "last"
    if explicit and ckpt_path.parent.name == "checkpoints":
        # the user pointed at that run's checkpoint: the run goes on writing into its own directory
        run_dir = ckpt_path.parent.parent
        log.info("resuming from %s; writing into %s", ckpt_path, run_dir)
        redirect_run_dir(cfg, run_dir)
    # read (safely: a file holding anything but our types is refused) before any model is built, and
    # check the objective and the config
    resumed = read_checkpoint(ckpt_path) if ckpt_path is not None else None
    if resumed is not None:
        check_checkpoint(resumed, ckpt_path, str(cfg.objective.name))
        check_config(resumed, ckpt_path, config, allow_change)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")
    if cfg.fit.get("num_threads"):
        torch.set_num_threads(int(cfg.fit.num_threads))  # 1 is faster for tiny models on a busy CPU

    records = load_records(cfg.data, cfg.cache_dir)
    tokenizer = resolve_tokenizer(cfg, records)
    student = load_model(
        cfg.student,
        key="student",
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        seed=cfg.seed,
    )
    teacher = None
    has_teacher = bool(cfg.teacher.get("path") or cfg.teacher.get("arch"))
    if objective_needs_teacher(cfg) or (cfg.eval.compare and has_teacher):
        if not has_teacher:
            raise MinillmError(f"objective={cfg.objective.name} needs a teacher: set teacher.path")
        teacher = freeze(
            load_model(
                cfg.teacher,
                key="teacher",
                vocab_size=len(tokenizer),
                eos_token_id=tokenizer.eos_token_id,
                seed=cfg.seed + 1,
            )
        )
        check_same_vocab(teacher, student, tokenizer)
        dtype = teacher_dtype(cfg)
        if dtype is not None:  # inference only: reduced-precision weights halve its memory (CUDA)
            teacher.to(dtype)
        if cfg.teacher.get("path"):
            check_same_tokenizer(tokenizer, cfg.teacher.path, "teacher.path")

    module_cls = module_class(cfg)
    dm = InstructionDataModule(
        cfg.data,
        tokenizer,
        records,
        seed=cfg.seed,
        train_mode=module_cls.train_data,
        prompt_batch_size=cfg.objective.get("num_rollouts"),
    )
    results: dict = {
        "config": {
            "objective": cfg.objective.name,
            "seed": cfg.seed,
            "run_name": cfg.run_name,
            "teacher": cfg.teacher.get("path"),
            "student": cfg.student.get("path"),
            "student_params": sum(p.numel() for p in student.parameters()),
            "teacher_params": None if teacher is None else sum(p.numel() for p in teacher.parameters()),
        }
    }
    table: dict[str, dict] = {}
    if cfg.eval.compare and teacher is not None:
        table["teacher"] = evaluate_splits(cfg, teacher, tokenizer, dm, "teacher", cache=True)
    if cfg.eval.compare:
        table["student init"] = evaluate_splits(
            cfg, student, tokenizer, dm, "student init", cache=bool(cfg.student.get("path"))
        )

    if cfg.objective.get("train_on_teacher_samples"):
        from minillm.data.seqkd import teacher_samples

        dm.replace_train_responses(teacher_samples(cfg, teacher, tokenizer, dm))

    module = instantiate(cfg.objective.module)(
        student,
        cfg,
        tokenizer,
        teacher=teacher if objective_needs_teacher(cfg) else None,
        datamodule=dm,
        val_examples=dm.examples["valid"],
        val_records=dm.records["valid"],
    )
    resume_step = None
    if resumed is not None:
        check_checkpoint(resumed, ckpt_path, str(cfg.objective.name), module)
        data = (resumed.get("minillm") or {}).get("data")
        if data is not None:  # as the module does when Lightning loads it (the logging step depends on it)
            fix_epoch_end_checkpoint(resumed, dm.train_batches_in_epoch(int(data["epoch"])))
        resume_step = resume_log_step(resumed)
        if ckpt_path.parent.name == "checkpoints" and ckpt_path.parents[1] != run_dir:
            continue_csv(ckpt_path.parents[1], run_dir)
        del resumed
    loggers = loggers_from_config(cfg, run_dir, resume_step=resume_step)
    trainer, checkpoint = make_trainer(cfg, loggers, make_eval_callbacks(cfg, dm, tokenizer, teacher))
    started = time.perf_counter()
    try:
        trainer.fit(
            module,
            datamodule=dm,
            ckpt_path=str(ckpt_path) if ckpt_path else None,
            weights_only=True,  # AtomicCheckpointIO loads with weights_only and our allowlist in any case
        )
    except RunInterrupted:
        for lg in loggers:
            lg.save()
            lg.finalize("aborted")
        raise
    except (ValueError, MisconfigurationException) as err:
        raise lightning_config_error(err, cfg) from None
    train_seconds = time.perf_counter() - started
    from minillm.models.loading import weights_digest

    final_weights = weights_digest(student)  # the weights training ended with (before best selection)

    best = checkpoint.best_model_path
    if best:
        log.info("selected %s (%s=%s)", best, cfg.select.monitor, checkpoint.best_model_score)
        state = load_checkpoint(best)["state_dict"]
        module.load_state_dict(state)
    if cfg.select.get("save_hf", True):
        student.save_pretrained(run_dir / "best_model")
        tokenizer.save_pretrained(run_dir / "best_model")
    table["trained student"] = evaluate_splits(cfg, student, tokenizer, dm, "trained student")

    results.update(
        {
            "train_seconds": round(train_seconds, 1),
            "global_step": trainer.global_step,
            "final_weights_sha1": final_weights,
            "best_checkpoint": best or None,
            "best_score": None if checkpoint.best_model_score is None else float(checkpoint.best_model_score),
            "eval": table,
        }
    )
    split = cfg.eval.splits[0]
    for name, res in table.items():
        prefix = {"trained student": "test", "teacher": "teacher", "student init": "init"}[name]
        results[f"{prefix}/rougeL"] = res[split]["rougeL"]
        results[f"{prefix}/valid_rate"] = res[split]["valid_rate"]
        results[f"{prefix}/valid_rate_ci95"] = res[split].get("valid_rate_ci95")
    compare = compare_to_init(table, split)
    results.update(compare)
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
    print(f"\n{split} split, {cfg.eval.num_samples or 'all'} prompts, seeds {list(cfg.eval.seeds)}:")
    print(format_table(table, split))
    if compare:
        print(format_comparison(compare, split))
    print(f"results: {run_dir / 'results.json'}")
    for lg in loggers:
        lg.finalize("success")
    return results
