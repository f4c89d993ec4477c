"""The evaluation command's work, top to bottom: resolve the model → data → each metric → files and logs.

``run_evaluation(cfg)`` is what ``python -m minillm.evaluate`` calls (config: ``conf/evaluate.yaml``); it
writes ``results.json``, ``summary.md``, ``exaccerr.csv`` and the PNG figures into the run directory
and returns the results dictionary. See docs/evaluation.md for how to read each number. The pieces:
``evaluate_config`` (the ``evaluate`` node's checks), ``loading`` (which model), ``suite_metrics`` (each
metric from its settings) and ``suite_outputs`` (files and loggers).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from minillm.data.datamodule import load_records
from minillm.data.datasets import tokenize_records
from minillm.data.template import PromptTemplate
from minillm.errors import MinillmError
from minillm.evaluation.evaluate_config import validate_evaluate_config
from minillm.evaluation.loading import load_evaluated_model
from minillm.evaluation.plots import plot_exaccerr
from minillm.evaluation.report import summary_markdown
from minillm.evaluation.sampled import eval_subset
from minillm.evaluation.suite_metrics import calibration_metrics, exposure_metric, loss_metric, rouge_metrics
from minillm.evaluation.suite_outputs import log_results, write_curve_csv, write_results
from minillm.models.prepare import prepare_models
from minillm.rollout import vllm_engine

# Scalars copied to the top level as "<split>/<name>" (and logged to the experiment loggers).
SCALARS = (
    "rougeL",
    "rougeL_std",
    "exact_match",
    "valid_rate",
    "distinct4",
    "length",
    "loss",  # the LM loss of the gold responses of the evaluated split: "<split>/loss"
    "exaccerr",
    "exaccerr_final",
    "ece",
    "calibration_accuracy",
)


def results_header(cfg, source: str, metrics: dict) -> dict:
    """The results dictionary before any metric: what was evaluated, with which settings."""
    e, ev = cfg.evaluate, cfg.eval
    return {
        "kind": "minillm.evaluate",
        "model": e.model,
        "split": e.split,
        "source": source,
        "config": {
            "run_name": cfg.run_name,
            "seed": cfg.seed,
            "model": e.model,
            "path": e.get("path"),
            "teacher": cfg.teacher.get("path") or cfg.teacher.get("name"),
        },
        "settings": {
            "seeds": list(ev.seeds),
            "temperature": ev.temperature,
            "top_k": ev.top_k,
            "top_p": ev.top_p,
            "max_new_tokens": ev.max_new_tokens,
            "no_repeat_ngram_size": e.no_repeat_ngram_size,
            "length_buckets": list(e.length_buckets),
        },
        "eval": {e.model: {e.split: metrics}},
        "seconds": {},
    }


def run_evaluation(cfg) -> dict:
    """Evaluate one model on ``evaluate.split`` with ``evaluate.metrics``; write and return the results."""
    from minillm.config import validate_config

    validate_config(cfg)
    validate_evaluate_config(cfg)
    prepare_models(cfg)
    vllm_engine.configure(cfg)  # sampler=vllm: the engine (started on first use); hf: none
    e, ev = cfg.evaluate, cfg.eval
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    records = load_records(cfg.data, cfg.cache_dir)
    if e.split not in records:
        raise MinillmError(f"evaluate.split={e.split!r}; choose one of {sorted(records)}")
    model, tokenizer, source = load_evaluated_model(cfg, records)
    from minillm.training.precision import resolve_precision

    resolve_precision(
        cfg, model
    )  # trainer.precision=auto: measured on the evaluated model and logged, as a run does
    device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" and torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    name, split = e.model, e.split
    template = PromptTemplate.from_name(cfg.data.template, tokenizer)
    examples = tokenize_records(
        records[split],
        tokenizer,
        template,
        max_prompt_len=cfg.data.max_prompt_len,
        max_response_len=cfg.data.max_response_len,
        split=split,
    )
    if not examples:
        raise MinillmError(
            f"evaluate.split={split}: no prompt fits data.max_prompt_len={cfg.data.max_prompt_len}"
        )
    subset = eval_subset(examples, ev.num_samples, split)
    metrics: dict = {"n": len(subset), "seeds": list(ev.seeds)}
    results = results_header(cfg, source, metrics)

    def timed(key, fn):
        started = time.perf_counter()
        out = fn()
        results["seconds"][key] = round(time.perf_counter() - started, 1)
        return out

    if "rouge" in e.metrics:
        metrics.update(timed("rouge", lambda: rouge_metrics(cfg, model, tokenizer, subset, records[split])))
    if "loss" in e.metrics:
        metrics["loss"] = timed("loss", lambda: loss_metric(cfg, model, tokenizer, subset))

    if "exposure" in e.metrics:
        results["exposure"] = timed("exposure", lambda: exposure_metric(cfg, model, tokenizer, examples))
        if results["exposure"].get("steps"):
            metrics["exaccerr"] = results["exposure"]["exaccerr_mean"]
            metrics["exaccerr_final"] = results["exposure"]["exaccerr_final"]
            write_curve_csv(results["exposure"], run_dir / "exaccerr.csv")
            plot_exaccerr({name: results["exposure"]}, run_dir / "exaccerr.png")

    if "calibration" in e.metrics:
        results["calibration"] = timed(
            "calibration",
            lambda: calibration_metrics(cfg, model, tokenizer, records[split], template, run_dir),
        )
        first = next((c for c in results["calibration"].values() if not c.get("skipped")), None)
        if first is not None:
            metrics["ece"] = first["ece"]
            metrics["calibration_accuracy"] = first["accuracy"]

    for key in SCALARS:
        if metrics.get(key) is not None:
            results[f"{split}/{key}"] = metrics[key]
    write_results(cfg, run_dir, results)
    log_results(cfg, run_dir, results)
    print(summary_markdown(results).split("\n## ")[0])
    print(f"results: {run_dir / 'results.json'}\nsummary: {run_dir / 'summary.md'}")
    return results
