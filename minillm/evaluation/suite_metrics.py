"""The evaluation command's metrics, each with its settings read from the config (``eval``, ``evaluate.*``):
Rouge-L and the other sampled metrics, the split's LM loss, exposure bias against the config's teacher and
calibration on labelled records. The metrics themselves live in ``sampled``, ``exposure`` and ``calibration``."""

from __future__ import annotations

from pathlib import Path

from minillm.evaluation.calibration import calibration, items_from_records, read_labelled_jsonl
from minillm.evaluation.exposure import exposure_bias
from minillm.evaluation.loading import load_teacher
from minillm.evaluation.plots import plot_reliability
from minillm.evaluation.sampled import EvaluationOptions, evaluate_model, lm_loss


def rouge_metrics(cfg, model, tokenizer, subset, records) -> dict:
    """Rouge-L over ``eval.seeds`` with exact match, validity, Distinct-4, length and the breakdowns, on the
    tokenized ``subset`` of the split's ``records``."""
    e = cfg.evaluate
    # the config's teacher, or a student init read from a path: fixed weights, cached as minillm.run does
    fixed = not e.get("path") and (e.model == "teacher" or bool(cfg.student.get("path")))
    options = EvaluationOptions.from_config(
        cfg.eval, tokenizer, no_repeat_ngram_size=e.no_repeat_ngram_size, length_edges=tuple(e.length_buckets)
    )
    sampled = evaluate_model(
        model, tokenizer, subset, records, options, name=e.model, cache_dir=cfg.cache_dir if fixed else None
    )
    return {k: v for k, v in sampled.items() if k != "seconds"}  # the command times each metric itself


def loss_metric(cfg, model, tokenizer, subset) -> float:
    """The LM loss of the subset's gold responses."""
    return lm_loss(model, subset, tokenizer.pad_token_id, batch_size=cfg.eval.batch_size)


def exposure_metric(cfg, model, tokenizer, examples) -> dict:
    """ExAccErr of ``model`` against the config's teacher on the first ``evaluate.exposure.num_prompts``
    examples, or ``{"skipped": why}``."""
    x = cfg.evaluate.exposure
    if cfg.evaluate.model == "teacher" and not cfg.evaluate.get("path"):
        return {"skipped": "the evaluated model is the teacher (ExAccErr is 0 by definition)"}
    teacher = load_teacher(cfg, tokenizer, model)
    if teacher is None:
        return {"skipped": "no teacher configured (set teacher.path or a teacher= preset)"}
    teacher.to(next(model.parameters()).device)
    return exposure_bias(
        model,
        teacher,
        examples[: x.num_prompts],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        samples_per_prompt=x.samples_per_prompt,
        max_new_tokens=x.max_new_tokens,
        batch_size=x.batch_size,
        seed=x.seed,
        ignore_eos=bool(x.ignore_eos),
        min_alive=float(x.min_alive),
    )


def calibration_metrics(cfg, model, tokenizer, records, template, run_dir: Path) -> dict:
    """ECE on the split's classification records (and ``evaluate.calibration.path``'s), one entry per
    source, each with its reliability diagram written into ``run_dir``."""
    c = cfg.evaluate.calibration
    sources = {cfg.evaluate.split: items_from_records(records)}
    if c.get("path"):
        sources["file"] = read_labelled_jsonl(c.path)
    out = {}
    for source, items in sources.items():
        items = items[: c.num_records] if c.get("num_records") else items
        if not items:
            out[source] = {"skipped": "no classification records (label checks) in this split"}
            continue
        result = calibration(
            model,
            tokenizer,
            items,
            template,
            batch_size=c.batch_size,
            n_bins=c.bins,
            templates=tuple(c.templates),
        )
        result["plot"] = f"reliability_{source}.png"
        plot_reliability(result["bins"], run_dir / result["plot"], title=f"Reliability ({source})")
        out[source] = result
    return out
