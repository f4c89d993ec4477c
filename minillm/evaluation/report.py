"""Markdown views of results: the side-by-side metric table (``python -m minillm.compare``), the study
report of a multirun (``python -m minillm.report``) and the ``summary.md`` of one evaluation.

All read the one results layout shared by ``minillm.run`` and ``minillm.evaluate``:
``results["eval"][model name][split]`` holds a model's scalar metrics on a split.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from minillm.errors import MinillmError
from minillm.evaluation.plots import alpha_plot, learning_curves, scaling_plot

# (header, key, std key, format) in the paper's order: quality, then exposure bias, calibration, diversity.
COLUMNS = (
    ("Rouge-L", "rougeL", "rougeL_std", "{:.1f}"),
    ("EM", "exact_match", None, "{:.1f}"),
    ("valid %", "valid_rate", "valid_rate_std", "{:.1f}"),
    ("ExAccErr %", "exaccerr", None, "{:.1f}"),
    ("ECE", "ece", None, "{:.3f}"),
    ("label acc %", "calibration_accuracy", None, "{:.1f}"),
    ("Dist-4", "distinct4", None, "{:.1f}"),
    ("loss", "loss", None, "{:.3f}"),  # the header names the split: "test loss", "valid loss"
    ("length", "length", None, "{:.1f}"),
)


def _cell(metrics: dict, key: str, std_key: str | None, fmt: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "–"
    text = fmt.format(value)
    if std_key and metrics.get(std_key) is not None and len(metrics.get("seeds") or ()) > 1:
        text += " ± " + fmt.format(metrics[std_key])
    return text


def _upgrade_metrics(metrics: dict) -> dict:
    """A split's metrics in today's keys: results written before the LM loss was named by its split
    called it ``test_loss`` whatever the split."""
    if "test_loss" in metrics and "loss" not in metrics:
        return {**metrics, "loss": metrics["test_loss"]}
    return metrics


def _header(name: str, split: str | None) -> str:
    if name != "loss":
        return name
    return f"{split} loss" if split else "LM loss"


def metric_table(rows: list[tuple[str, dict]], split: str | None = None) -> str:
    """A markdown table, one row per (label, metrics); a column appears when any row has its metric.
    ``split`` names the split in the loss column's header ("valid loss"; "LM loss" without one)."""
    rows = [(label, _upgrade_metrics(m)) for label, m in rows]
    columns = [c for c in COLUMNS if any(m.get(c[1]) is not None for _, m in rows)]
    lines = [
        "| model | " + " | ".join(_header(c[0], split) for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for label, metrics in rows:
        cells = [_cell(metrics, key, std, fmt) for _, key, std, fmt in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def breakdown_table(groups: dict[str, dict], first: str) -> str:
    """Rouge-L / exact match / validity per group (category or length bucket) as markdown."""
    lines = [f"| {first} | n | Rouge-L | EM | valid % |", "|---|---:|---:|---:|---:|"]
    for name, g in groups.items():
        cells = [_cell(g, k, None, "{:.1f}") for k in ("rougeL", "exact_match", "valid_rate")]
        lines.append(f"| {name} | {g.get('n', 0)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- reading results files


def find_results(paths: list[str | Path]) -> list[Path]:
    """results.json files named directly or found in run directories (searched recursively, sorted)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            direct = path / "results.json"
            hits = [direct] if direct.is_file() else sorted(path.rglob("results.json"))
            if not hits:
                raise MinillmError(f"{path}: no results.json in this folder or below it")
            found.extend(hits)
        else:
            raise MinillmError(f"{path}: no such results file or run directory")
    return found


def load_results(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MinillmError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("eval"), dict):
        raise MinillmError(f"{path}: not a minillm results file (no 'eval' section)")
    return data


def _run_labels(paths: list[Path], datas: list[dict]) -> list[str]:
    """The run name of each file, or its folder's name; made unique with the folder path if needed."""
    labels = [
        str((d.get("config") or {}).get("run_name") or p.parent.name)
        for p, d in zip(paths, datas, strict=True)
    ]
    return [
        f"{label} ({p.parent})" if labels.count(label) > 1 else label
        for p, label in zip(paths, labels, strict=True)
    ]


def comparison_rows(paths: list[Path], split: str | None = None) -> list[tuple[str, dict]]:
    """One row per model of each file, on ``split`` (default: each model's first split)."""
    datas = [load_results(p) for p in paths]
    labels = _run_labels(paths, datas)
    rows = []
    for path, data, label in zip(paths, datas, labels, strict=True):
        for model, splits in data["eval"].items():
            if not isinstance(splits, dict) or not splits:
                continue
            chosen = split or next(iter(splits))
            if chosen not in splits:
                raise MinillmError(f"{path}: model {model!r} has no results on split {chosen!r}")
            name = model if len(paths) == 1 else f"{label}: {model}"
            rows.append((name, splits[chosen]))
    if not rows:
        raise MinillmError("no evaluated model in the given results files")
    return rows


def comparison_markdown(paths: list[str | Path], split: str | None = None) -> str:
    """``python -m minillm.compare``: the metric table of every model in the results files ``paths``
    (files or run folders), on ``split`` (default: each model's first)."""
    return metric_table(comparison_rows(find_results(paths), split), split)


# --------------------------------------------------------------------------- the study report of a multirun

# (results key, header, format): the trained student's columns of COLUMNS that every run records, then
# the cost of the run.
STUDY_COLUMNS = [
    *(
        (key, header, fmt)
        for header, key, _, fmt in COLUMNS
        if key in ("rougeL", "exact_match", "valid_rate", "distinct4", "length")
    ),
    ("train_seconds", "train s", "{:.0f}"),
    ("global_step", "steps", "{:.0f}"),
]


def group_name(results: dict) -> str:
    """The run name without its seed: ``<objective>-s<seed>`` → ``<objective>``."""
    name = str(results.get("config", {}).get("run_name") or "run")
    return re.sub(r"-s\d+$", "", name)


def job_seed(results: dict) -> int | None:
    """The training seed of a run: its config's, else the ``-s<seed>`` of its name; None if neither."""
    config = results.get("config", {})
    if config.get("seed") is not None:
        return config["seed"]
    match = re.search(r"-s(\d+)$", str(config.get("run_name") or ""))
    return int(match.group(1)) if match else None


def job_metrics(job: Path, split: str = "test") -> dict | None:
    """The trained student's metrics of one run folder, with its cost and model sizes; None if absent."""
    path = job / "results.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    student = (data.get("eval") or {}).get("trained student", {}).get(split)
    if student is None:
        return None
    flat = {k: student.get(k) for k, _, _ in STUDY_COLUMNS}
    config = data.get("config", {})
    flat.update(
        train_seconds=data.get("train_seconds"),
        global_step=data.get("global_step"),
        objective=config.get("objective"),
        student_params=config.get("student_params"),
        teacher_params=config.get("teacher_params"),
        group=group_name(data),
        seed=job_seed(data),
    )
    return flat


# Overrides that are not a setting of the run: its seed (a row's runs differ in it), where it writes and
# logs, how it resumes or is stopped to resume, its name (the group name already holds it), Hydra's own.
# Every other override may change the numbers: jobs of one run name that differ in one are not seeds of
# one setting.
NOT_SETTINGS = (
    "seed",
    "hydra",
    "ckpt_path",
    "resume",
    "fit.stop_at_step",
    "output_dir",
    "cache_dir",
    "assets_dir",
    "scaling_models",
    "run_name",
    "arm_name",
    "experiment_name",
    "logger",
    "trainer.enable_progress_bar",
    "fit.num_threads",
)


def _yaml(path: Path, kind: type):
    """A YAML file as plain lists and dicts (interpolations left as written); None if absent."""
    if not path.is_file():
        return None
    try:
        data = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as err:  # the YAML parser's message spans lines: its first names the problem
        raise MinillmError(f"{path}: not readable YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, kind):
        raise MinillmError(f"{path}: expected a YAML {kind.__name__}, found {type(data).__name__}")
    return data


def _override_keys(job: Path) -> list[str]:
    """The keys the job's Hydra overrides set (``.hydra/overrides.yaml``), less those of NOT_SETTINGS."""
    keys = []
    for override in _yaml(job / ".hydra" / "overrides.yaml", list) or ():
        key = str(override).split("=", 1)[0].lstrip("+~")
        root = re.split(r"[./@]", key, maxsplit=1)[0]
        if root == "hydra" or any(key == k or key.startswith(k + ".") for k in NOT_SETTINGS):
            continue
        keys.append(key)
    return keys


class _JobSettings:
    """What one job ran with, by key: the config group's choice (``.hydra/hydra.yaml``), else the resolved
    value (``config.yaml``), else the override as written; None where the job has none of them."""

    def __init__(self, job: Path):
        pairs = (str(o).split("=", 1) for o in _yaml(job / ".hydra" / "overrides.yaml", list) or ())
        self.overrides = {p[0].lstrip("+~"): p[1] for p in pairs if len(p) == 2 and not p[0].startswith("~")}
        hydra = _yaml(job / ".hydra" / "hydra.yaml", dict) or {}
        self.choices = ((hydra.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
        self.config = _yaml(job / "config.yaml", dict) or {}

    def value(self, key: str) -> str | None:
        if key in self.choices:
            return None if self.choices[key] is None else str(self.choices[key])
        node = self.config
        for part in key.split("."):
            node = node.get(part, None) if isinstance(node, dict) else None
        if isinstance(node, list):
            return json.dumps(node)
        if node is not None and not isinstance(node, dict):
            return str(node)
        return self.overrides.get(key)


def _split_by_settings(name: str, jobs: list[Path]) -> dict[str, list[Path]]:
    """Jobs of one run name, per setting: split by the overridden keys whose values differ between them,
    each part named ``name (key=value, ...)``; one part named ``name`` when none differ."""
    keys = sorted({k for job in jobs for k in _override_keys(job)})
    if not keys:
        return {name: jobs}
    values = {job: tuple(_JobSettings(job).value(k) for k in keys) for job in jobs}
    differing = [i for i in range(len(keys)) if len({v[i] for v in values.values()}) > 1]
    parts: dict[str, list[Path]] = defaultdict(list)
    for job in jobs:
        named = [f"{keys[i]}={values[job][i]}" for i in differing if values[job][i] is not None]
        parts[f"{name} ({', '.join(named)})" if named else name].append(job)
    return parts


def group_jobs(root: Path, split: str = "test") -> tuple[dict[str, list[Path]], list[str]]:
    """The rows of a study: run folders with results, per run name without the seed, split where their
    overrides set other values; jobs of one row with the same seed (nothing tells them apart) split by
    folder. And a note for each such row."""
    by_name: dict[str, list[Path]] = defaultdict(list)
    seeds: dict[Path, int | None] = {}
    for path in sorted(root.rglob("results.json")):
        metrics = job_metrics(path.parent, split)
        if metrics is not None:
            by_name[metrics["group"]].append(path.parent)
            seeds[path.parent] = metrics["seed"]
    rows: dict[str, list[Path]] = {}
    notes = []
    for name, jobs in by_name.items():
        for row, row_jobs in _split_by_settings(name, jobs).items():
            row_seeds = [seeds[j] for j in row_jobs if seeds[j] is not None]
            repeated = sorted({s for s in row_seeds if row_seeds.count(s) > 1})
            if not repeated:
                rows[row] = row_jobs
                continue
            folders = {job: str(job.relative_to(root)) for job in row_jobs}
            for seed in repeated:
                same = ", ".join(folders[j] for j in row_jobs if seeds[j] == seed)
                notes.append(
                    f"{row}: {row_seeds.count(seed)} jobs with seed {seed} ({same}) and no override that "
                    "tells them apart: one row per folder, not averaged"
                )
            for job in row_jobs:
                rows[f"{row} ({folders[job]})"] = [job]
    return rows, notes


def collect_jobs(root: Path, split: str = "test") -> dict[str, list[Path]]:
    """Run folders with results, per row of the study table (see ``group_jobs``)."""
    return group_jobs(root, split)[0]


def collect(root: Path, split: str = "test") -> tuple[dict[str, list[dict]], list[str], list[str]]:
    """Per row, one flat metrics dict per seed; the folders of jobs without results; notes on the rows."""
    rows, notes = group_jobs(root, split)
    groups = {name: [job_metrics(job, split) for job in jobs] for name, jobs in rows.items()}
    failed = []
    for p in sorted(root.rglob(".hydra")):
        job = p.parent
        if (job / "results.json").is_file():
            continue
        name = str(job.relative_to(root))
        record = job / "failed.json"
        if record.is_file():  # written by minillm.run when a sweep job fails
            info = json.loads(record.read_text())
            name += f" ({info.get('run_name')}: {info.get('error')})"
        else:
            name += " (no results: still running, killed, or stopped to resume)"
        failed.append(name)
    return groups, failed, notes


PAPER_ROWS = ("sft", "forward_kld", "seqkd", "reverse_kld")  # Table 1: SFT w/o KD, KD, SeqKD, MiniLLM


def row_order(name: str, runs: list[dict]) -> tuple:
    """The paper's row order by objective; within an objective (and for other objectives), by name."""
    objective = runs[0].get("objective") if runs else None
    rank = PAPER_ROWS.index(objective) if objective in PAPER_ROWS else len(PAPER_ROWS)
    return (rank, name)


def _seeds_cell(values: list, fmt: str) -> str:
    """Mean ± standard deviation over the training seeds (the mean alone for one seed)."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean = statistics.mean(values)
    if len(values) == 1:
        return fmt.format(mean)
    return f"{fmt.format(mean)} ± {fmt.format(statistics.stdev(values))}"


def report_markdown(root: Path, split: str = "test") -> str:
    """The study table: one row per run group and setting (mean ± std over seeds), then notes on rows
    that were split, then the jobs without results."""
    groups, failed, notes = collect(root, split)
    unused = [p for p in sorted(root.rglob("results.json")) if job_metrics(p.parent, split) is None]
    if not groups and not failed:
        if not unused:
            raise MinillmError(f"{root}: no results.json found below this folder")
        splits = sorted({s for p in unused for s in _student_splits(p)})
        raise MinillmError(
            f"{root}: {len(unused)} results.json found, none with the trained student's {split} metrics ("
            + (
                f"their splits: {', '.join(splits)}: choose one with --split"
                if splits
                else "none is a training run's"
            )
            + ")"
        )
    header = "| run | seeds | " + " | ".join(h for _, h, _ in STUDY_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(STUDY_COLUMNS) + 2)]
    for name, runs in sorted(groups.items(), key=lambda item: row_order(item[0], item[1])):
        cells = [_seeds_cell([r[k] for r in runs], fmt) for k, _, fmt in STUDY_COLUMNS]
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    text = f"{split} split, mean ± std over training seeds\n\n" + "\n".join(lines)
    if notes:
        text += "\n\nRows split by folder:\n" + "\n".join(f"- {n}" for n in notes)
    if failed:
        text += "\n\nJobs without results:\n" + "\n".join(f"- {f}" for f in failed)
    if unused:
        text += (
            f"\n\nLeft out: results.json without the trained student's {split} metrics (an evaluation's, or "
            "another split's):\n" + "\n".join(f"- {p.parent.relative_to(root)}" for p in unused)
        )
    return text


def _student_splits(path: Path) -> list[str]:
    """The splits a results.json holds the trained student's metrics for (none for minillm.evaluate's)."""
    try:
        return sorted((json.loads(path.read_text()).get("eval") or {}).get("trained student", {}))
    except (OSError, ValueError, AttributeError):
        return []


def write_plots(root: Path, folder: Path, split: str = "test") -> list[Path]:
    """Learning curves, and the α and scaling plots where the sweep varies α or model sizes."""
    jobs = collect_jobs(root, split)
    written = [
        learning_curves(jobs, folder / "learning_curves.png"),
        alpha_plot(jobs, lambda job: job_metrics(job, split), folder / "alpha.png"),
        scaling_plot(jobs, lambda job: job_metrics(job, split), folder / "scaling.png"),
    ]
    return [p for p in written if p is not None]


def study_report(root: Path, split: str = "test", plots: Path | None = None) -> str:
    """``python -m minillm.report``: the study table of the runs below ``root``; with ``plots``, the
    figures written into that folder and linked under the table."""
    if not root.is_dir():
        raise MinillmError(f"{root}: not a folder")
    text = report_markdown(root, split)
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        written = write_plots(root, plots, split)
        if written:
            text += "\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in written)
    return text


# --------------------------------------------------------------------------- summary.md of one evaluation


def _fmt(value, fmt: str = "{:.1f}") -> str:
    return "–" if value is None else fmt.format(value)


def summary_markdown(results: dict) -> str:
    """The human-readable summary of one ``minillm.evaluate`` run."""
    name, split = results["model"], results["split"]
    m = results["eval"][name][split]
    out = [
        f"# Evaluation: {name} on the {split} split",
        "",
        f"Model: `{results.get('source')}`. Seeds {m.get('seeds')}, {m.get('n')} prompts, temperature "
        f"{results['settings']['temperature']}, top-k {results['settings']['top_k']}, top-p "
        f"{results['settings']['top_p']}, no_repeat_ngram_size {results['settings']['no_repeat_ngram_size']}.",
        "",
        metric_table([(name, m)], split),
        "",
    ]
    if m.get("by_length"):
        out += ["## By gold-response length (tokens)", "", breakdown_table(m["by_length"], "length"), ""]
    if m.get("per_category"):
        out += ["## By category", "", breakdown_table(m["per_category"], "category"), ""]
    exposure = results.get("exposure")
    if exposure and exposure.get("steps"):
        out += [
            "## Exposure bias (ExAccErr)",
            "",
            f"{exposure['n_prompts']} prompts × {exposure['samples_per_prompt']} samples from each model. "
            f"ExAccErr mean over l ≤ {exposure['reliable_steps']}: {_fmt(exposure['exaccerr_mean'])} %; "
            f"at l = {exposure['reliable_steps']}: {_fmt(exposure['exaccerr_final'])} %. "
            "Curve data: `exaccerr.csv`.",
            "",
            "![ExAccErr](exaccerr.png)",
            "",
        ]
    elif exposure and exposure.get("skipped"):
        out += ["## Exposure bias (ExAccErr)", "", f"Skipped: {exposure['skipped']}.", ""]
    for source, cal in (results.get("calibration") or {}).items():
        if cal.get("skipped"):
            out += [f"## Calibration ({source})", "", f"Skipped: {cal['skipped']}.", ""]
            continue
        out += [
            f"## Calibration ({source})",
            "",
            f"{cal['n']} classification prompts: ECE {_fmt(cal['ece'], '{:.3f}')}, accuracy "
            f"{_fmt(cal['accuracy'])} %, mean confidence {_fmt(cal['confidence'], '{:.3f}')}, phrasing "
            f"coverage {_fmt(cal['coverage'], '{:.2g}')}.",
            "",
            f"![reliability]({cal['plot']})",
            "",
        ]
    samples = m.get("samples") or []
    if samples:
        out += ["## Samples (first seed)", ""]
        for s in samples:
            out += [
                f"- **{s['instruction']}**  ",
                f"  reference: {s['reference']}  ",
                f"  model: {s['response']}",
            ]
        out.append("")
    return "\n".join(out)
