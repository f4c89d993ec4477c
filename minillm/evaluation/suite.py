"""The evaluation command's work, top to bottom: resolve the model → data → each metric → files and logs.

``run_evaluation(cfg)`` is what ``python -m minillm.evaluate`` calls (config: ``conf/evaluate.yaml``); it
writes ``results.json``, ``summary.md``, ``exaccerr.csv`` and the PNG figures into the run directory
and returns the results dictionary. See docs/evaluation.md for how to read each number.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from minillm.data.datamodule import load_records
from minillm.data.datasets import tokenize_records
from minillm.data.template import PromptTemplate
from minillm.errors import MinillmError
from minillm.evaluation.calibration import calibration, items_from_records, read_labelled_jsonl
from minillm.evaluation.exposure import exposure_bias
from minillm.evaluation.plots import plot_exaccerr, plot_reliability
from minillm.evaluation.report import summary_markdown
from minillm.evaluation.sampled import EvaluationOptions, eval_subset, evaluate_model, lm_loss
from minillm.models.loading import check_same_vocab, freeze, load_model, load_tokenizer
from minillm.models.prepare import prepare_models
from minillm.models.tokenizers import resolve_tokenizer
from minillm.rollout import vllm_engine
from minillm.safe_load import load_checkpoint

log = logging.getLogger(__name__)
MODELS = ("student", "teacher", "init")
METRICS = ("rouge", "exposure", "calibration", "loss")
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


def validate_evaluate_config(cfg) -> None:
    """Check the ``evaluate`` node; each error names its key."""
    e = cfg.get("evaluate")
    if e is None:
        raise MinillmError(
            "evaluate: no such config node; run `python -m minillm.evaluate` (conf/evaluate.yaml)"
        )
    if e.model not in MODELS:
        raise MinillmError(f"evaluate.model={e.model!r}; choose one of {list(MODELS)}")
    if not e.metrics:
        raise MinillmError(f"evaluate.metrics=[]: name at least one of {list(METRICS)}")
    unknown = [m for m in e.metrics if m not in METRICS]
    if unknown:
        raise MinillmError(f"evaluate.metrics: unknown {unknown}; choose from {list(METRICS)}")
    for key in (
        "exposure.num_prompts",
        "exposure.samples_per_prompt",
        "exposure.max_new_tokens",
        "exposure.batch_size",
        "calibration.bins",
        "calibration.batch_size",
    ):
        value = OmegaConf.select(e, key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise MinillmError(f"evaluate.{key}={value!r}: must be a positive integer")
    n = e.no_repeat_ngram_size
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise MinillmError(f"evaluate.no_repeat_ngram_size={n!r}: must be an integer >= 0 (0 = off)")
    edges = list(e.length_buckets)
    if not edges or any(not isinstance(x, int) for x in edges) or edges != sorted(set(edges)):
        raise MinillmError(
            f"evaluate.length_buckets={edges}: give increasing integer upper edges, e.g. [5, 10]"
        )
    if not 0.0 <= float(e.exposure.min_alive) <= 1.0:
        raise MinillmError(f"evaluate.exposure.min_alive={e.exposure.min_alive!r}: must be in [0, 1]")
    if not e.calibration.templates or any("{label}" not in str(t) for t in e.calibration.templates):
        raise MinillmError("evaluate.calibration.templates: each template must contain {label}")


# --------------------------------------------------------------------------- which model


def _is_model_folder(folder: Path) -> bool:
    """A Hugging Face model folder, or a peft adapter folder (a LoRA run's best_model/ exported with
    student.lora.export=adapters; transformers loads its base from adapter_config.json)."""
    return (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()


def _run_dir_of(path: Path) -> Path | None:
    """The minillm.run directory a path belongs to (itself, or the parent of best_model/, checkpoints/)."""
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / "results.json").is_file() or (candidate / "checkpoints").is_dir():
            return candidate
    return None


def _warn_if_other_data(cfg, run_dir: Path | None) -> None:
    saved = run_dir / "config.yaml" if run_dir else None
    if saved is None or not saved.is_file():
        return
    from minillm.resume import upgrade_config

    run_data = upgrade_config(OmegaConf.to_container(OmegaConf.load(saved), resolve=True)).get("data")
    if run_data is not None and run_data != OmegaConf.to_container(cfg.data, resolve=True):
        log.warning(
            "the data config differs from the one %s was trained with: pass the same data=… overrides",
            run_dir,
        )


def _load_ckpt(cfg, path: Path, records, node: str = "evaluate"):
    """A Lightning checkpoint of a run: its ``student.*`` weights in the run's (or the config's) student."""
    ckpt = load_checkpoint(path, f"{node}.path")  # refuses a file that holds anything but our types
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    weights = {k[len("student.") :]: v for k, v in (state or {}).items() if k.startswith("student.")}
    if not weights:
        raise MinillmError(f"{node}.path={path}: checkpoint has no 'student.*' weights in its state_dict")
    run_dir = _run_dir_of(path)
    exported = run_dir / "best_model" if run_dir else None
    saved = ((ckpt.get("minillm") or {}).get("config") or {}) if isinstance(ckpt, dict) else {}
    if ((saved.get("student") or {}).get("lora") or {}).get("r") is not None:
        found = exported is not None and _has_tokenizer(exported)
        tokenizer = load_tokenizer(str(exported)) if found else resolve_tokenizer(cfg, records)
        return _lora_checkpoint_model(saved, weights, tokenizer, node, path), tokenizer
    if exported is not None and (exported / "config.json").is_file():
        model = load_model(OmegaConf.create({"path": str(exported)}), key=node)
        tokenizer = (
            load_tokenizer(str(exported)) if _has_tokenizer(exported) else resolve_tokenizer(cfg, records)
        )
        where = str(exported)
    else:
        tokenizer = resolve_tokenizer(cfg, records)
        model = _config_model(cfg, "student", tokenizer)
        where = "the config's student"
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise MinillmError(
            f"{node}.path={path}: its weights do not fit the model of {where} ({first})"
        ) from None
    return model, tokenizer


def _lora_checkpoint_model(saved: dict, weights: dict, tokenizer, node: str, path: Path):
    """A LoRA run's checkpoint holds only its adapters: the run's own student (its config, saved in the
    checkpoint) wrapped as it was, with the adapters loaded, merged into a plain model."""
    from minillm.models.lora import apply_lora

    spec = OmegaConf.create(saved["student"])
    base = load_model(
        spec, key=node, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, seed=saved["seed"]
    )
    model = apply_lora(base, spec.lora, seed=saved["seed"])
    state = model.state_dict()
    wrong = sorted({k for k in state if ".lora_" in k} ^ weights.keys())
    if wrong:
        raise MinillmError(
            f"{node}.path={path}: its LoRA adapters do not fit the run's student (first mismatch: {wrong[0]})"
        )
    model.load_state_dict({**state, **weights})
    return model.merge_and_unload()


def _config_model(cfg, key: str, tokenizer):
    seed = cfg.seed + (1 if key == "teacher" else 0)  # as minillm.run builds them
    return load_model(
        cfg[key], key=key, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, seed=seed
    )


def load_evaluated_model(cfg, records, node: str = "evaluate"):
    """(model, tokenizer, source): ``<node>.path`` when set, else the config's teacher or student.

    ``node`` is the config node that holds ``model`` and ``path`` (``evaluate``; ``diagnose`` for
    ``python -m minillm.diagnose``); errors name its keys.
    """
    e = cfg[node]
    if not e.get("path"):
        if e.model == "student":
            raise MinillmError(
                f"{node}.path: {node}.model=student needs the trained student (a run directory, its "
                f"best_model/ folder, a checkpoints/*.ckpt or a hub id); {node}.model=init evaluates the "
                "config's student as it is"
            )
        key = "teacher" if e.model == "teacher" else "student"
        tokenizer = resolve_tokenizer(cfg, records)
        return _config_model(cfg, key, tokenizer), tokenizer, str(cfg[key].get("path") or f"{key}.arch")
    raw = str(e.path)
    path = Path(raw).expanduser()
    _warn_if_other_data(cfg, _run_dir_of(path) if path.exists() else None)
    if path.is_file():
        if path.suffix != ".ckpt":
            raise MinillmError(f"{node}.path={raw}: a file that is not a Lightning .ckpt")
        model, tokenizer = _load_ckpt(cfg, path, records, node)
        return model, tokenizer, str(path)
    if path.is_dir() and not _is_model_folder(path):
        if _is_model_folder(path / "best_model"):
            path = path / "best_model"
        elif (path / "checkpoints" / "best.ckpt").is_file():
            model, tokenizer = _load_ckpt(cfg, path / "checkpoints" / "best.ckpt", records, node)
            return model, tokenizer, str(path / "checkpoints" / "best.ckpt")
        else:
            raise MinillmError(
                f"{node}.path={raw}: folder has no config.json, best_model/ or checkpoints/best.ckpt"
            )
    model = load_model(OmegaConf.create({"path": str(path)}), key=node)
    local = Path(path)
    if local.is_dir() and _has_tokenizer(local):
        tokenizer = load_tokenizer(str(local), f"{node}.path")
    elif not local.exists() and not cfg.tokenizer.get("path"):
        tokenizer = load_tokenizer(str(path), f"{node}.path")  # a hub id ships its tokenizer
    else:
        tokenizer = resolve_tokenizer(cfg, records)
    return model, tokenizer, str(path)


def load_teacher(cfg, tokenizer, model):
    """The config's teacher for exposure bias, or None when there is none."""
    if not (cfg.teacher.get("path") or cfg.teacher.get("arch")):
        return None
    teacher = freeze(_config_model(cfg, "teacher", tokenizer))
    check_same_vocab(teacher, model, tokenizer)
    return teacher


# --------------------------------------------------------------------------- the run


def _write_curve_csv(exposure: dict, path: Path) -> None:
    keys = (
        "steps",
        "exaccerr",
        "regret",
        "teacher_error",
        "student_step_error",
        "teacher_step_error",
        "student_rows",
        "teacher_rows",
    )
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", *keys[1:]])
        for row in zip(*(exposure[k] for k in keys), strict=True):
            writer.writerow(["" if v is None else v for v in row])


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
    results: dict = {
        "kind": "minillm.evaluate",
        "model": name,
        "split": split,
        "source": source,
        "config": {
            "run_name": cfg.run_name,
            "seed": cfg.seed,
            "model": name,
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
        "eval": {name: {split: metrics}},
        "seconds": {},
    }

    def timed(key, fn):
        started = time.perf_counter()
        out = fn()
        results["seconds"][key] = round(time.perf_counter() - started, 1)
        return out

    if "rouge" in e.metrics:
        # the config's teacher, or a student init read from a path: fixed weights, cached as minillm.run does
        fixed = not e.get("path") and (e.model == "teacher" or bool(cfg.student.get("path")))
        sampled = timed(
            "rouge",
            lambda: evaluate_model(
                model,
                tokenizer,
                subset,
                records[split],
                EvaluationOptions.from_config(
                    ev,
                    tokenizer,
                    no_repeat_ngram_size=e.no_repeat_ngram_size,
                    length_edges=tuple(e.length_buckets),
                ),
                name=name,
                cache_dir=cfg.cache_dir if fixed else None,
            ),
        )
        metrics.update({k: v for k, v in sampled.items() if k != "seconds"})  # timed: results["seconds"]
    if "loss" in e.metrics:
        metrics["loss"] = timed(
            "loss", lambda: lm_loss(model, subset, tokenizer.pad_token_id, batch_size=ev.batch_size)
        )

    if "exposure" in e.metrics:
        results["exposure"] = timed("exposure", lambda: _exposure(cfg, model, tokenizer, examples, source))
        if results["exposure"].get("steps"):
            metrics["exaccerr"] = results["exposure"]["exaccerr_mean"]
            metrics["exaccerr_final"] = results["exposure"]["exaccerr_final"]
            _write_curve_csv(results["exposure"], run_dir / "exaccerr.csv")
            plot_exaccerr({name: results["exposure"]}, run_dir / "exaccerr.png")

    if "calibration" in e.metrics:
        results["calibration"] = timed(
            "calibration", lambda: _calibrations(cfg, model, tokenizer, records[split], template, run_dir)
        )
        first = next((c for c in results["calibration"].values() if not c.get("skipped")), None)
        if first is not None:
            metrics["ece"] = first["ece"]
            metrics["calibration_accuracy"] = first["accuracy"]

    for key in SCALARS:
        if metrics.get(key) is not None:
            results[f"{split}/{key}"] = metrics[key]
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (run_dir / "summary.md").write_text(summary_markdown(results))
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    _log(cfg, run_dir, results)
    print(summary_markdown(results).split("\n## ")[0])
    print(f"results: {run_dir / 'results.json'}\nsummary: {run_dir / 'summary.md'}")
    return results


def _exposure(cfg, model, tokenizer, examples, source) -> dict:
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


def _calibrations(cfg, model, tokenizer, records, template, run_dir: Path) -> dict:
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


def _log(cfg, run_dir: Path, results: dict) -> None:
    """Scalars to every logger (CSV always); with W&B also the breakdowns, the curve and the figures."""
    from minillm.loggers import loggers_from_config

    split, name = results["split"], results["model"]
    metrics = results["eval"][name][split]
    scalars = {k: v for k, v in results.items() if "/" in k and isinstance(v, int | float)}
    tables = {}
    for group in ("by_length", "per_category"):
        rows = metrics.get(group) or {}
        data = [[k, v["n"], v["rougeL"], v["exact_match"], v["valid_rate"]] for k, v in rows.items()]
        if data:
            tables[group] = ([group, "n", "rougeL", "exact_match", "valid_rate"], data)
    curve = results.get("exposure") or {}
    if curve.get("steps"):
        keys = ("steps", "exaccerr", "student_rows", "teacher_rows")
        tables["exaccerr"] = (
            ["step", "exaccerr", "student_rows", "teacher_rows"],
            list(zip(*(curve[k] for k in keys), strict=True)),
        )
    for lg in loggers_from_config(cfg, run_dir):
        lg.log_metrics(scalars, step=0)
        if type(lg).__name__ == "WandbLogger":
            for key, (columns, data) in tables.items():
                lg.log_table(f"{split}/{key}", columns=columns, data=[list(r) for r in data])
            for image in sorted(run_dir.glob("*.png")):  # one key each: the figures differ in size
                lg.log_image(f"{split}/{image.stem}", images=[str(image)])
        lg.finalize("success")
