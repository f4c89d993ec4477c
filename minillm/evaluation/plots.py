"""PNG figures (matplotlib, Agg): of one evaluation, the ExAccErr curve and the reliability diagram; of a
study (``python -m minillm.report``), the learning curves per run group, the α plot and the scaling plot.

The study figures are read from the run folders (``results.json``, ``config.yaml``, ``csv/metrics.csv`` or ``metrics.csv``);
W&B is not needed. Each returns the PNG it wrote, or None when the sweep has nothing of that kind.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_exaccerr(curves: dict[str, dict], path: str | Path) -> Path:
    """ExAccErr(l) (%) against the step l, one line per model; ``curves`` maps names to exposure dicts.

    Each line stops at its ``reliable_steps`` (enough rows still going); 0 is no excess error.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for name, curve in curves.items():
        n = curve.get("reliable_steps") or len(curve["steps"])
        points = [
            (s, v) for s, v in zip(curve["steps"][:n], curve["exaccerr"][:n], strict=True) if v is not None
        ]
        if points:
            ax.plot(*zip(*points, strict=True), label=name)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("generation step l")
    ax.set_ylabel("ExAccErr(l) (%)")
    ax.set_title("Exposure bias: excess accumulated error")
    if curves:
        ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_reliability(bins: list[dict], path: str | Path, *, title: str = "Reliability diagram") -> Path:
    """Accuracy against confidence per equal-width bin (bars), the diagonal being perfect calibration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=120)
    width = bins[0]["high"] - bins[0]["low"] if bins else 0.1
    filled = [b for b in bins if b["n"]]
    ax.bar(
        [b["low"] for b in filled],
        [b["accuracy"] for b in filled],
        width=width,
        align="edge",
        edgecolor="black",
        alpha=0.7,
        label="accuracy",
    )
    ax.plot(
        [b["confidence"] for b in filled],
        [b["confidence"] for b in filled],
        "o",
        color="tab:red",
        label="mean confidence",
    )
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    for b in filled:
        ax.annotate(str(b["n"]), (b["low"] + width / 2, 0.02), ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(frameon=False, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------- study figures

CURVES = [
    ("rollout/reward", "reward per token"),
    ("rollout/reverse_kl", "reverse KL per token"),
    ("rollout/length", "response length"),
    ("val/rougeL", "validation Rouge-L"),
]


def read_curves(job: Path) -> dict[str, list[tuple[int, float]]]:
    path = job / "csv" / "metrics.csv"
    if not path.is_file():  # a committed study's runs/<job>/ keeps it beside results.json
        path = job / "metrics.csv"
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    if not path.is_file():
        return out
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for key, _ in CURVES:
                if row.get(key):
                    out[key].append((int(float(row["step"])), float(row[key])))
    return out


def learning_curves(jobs: dict[str, list[Path]], path: Path) -> Path | None:
    """One panel per metric; one colour per run group, one thin line per seed."""
    curves = {name: [read_curves(j) for j in js] for name, js in jobs.items()}
    if not any(c for runs in curves.values() for c in runs):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.4))
    for i, (name, runs) in enumerate(sorted(curves.items())):
        for r, run in enumerate(runs):
            for ax, (key, _) in zip(axes, CURVES, strict=True):
                if run.get(key):
                    steps, values = zip(*run[key], strict=True)
                    ax.plot(
                        steps,
                        values,
                        color=f"C{i % 10}",
                        lw=1,
                        alpha=0.8,
                        marker="o" if len(steps) < 20 else None,
                        markersize=3,
                        label=name if r == 0 else None,
                    )
    for ax, (_, title) in zip(axes, CURVES, strict=True):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("logging step (round)", fontsize=8)
    handles, labels = axes[-1].get_legend_handles_labels()
    if not handles:
        for ax in axes:
            handles, labels = ax.get_legend_handles_labels()
            if handles:
                break
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _job_config(job: Path):
    path = job / "config.yaml"
    return OmegaConf.load(path) if path.is_file() else None


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def alpha_plot(jobs: dict[str, list[Path]], metric_of, path: Path) -> Path | None:
    """Test Rouge-L and validity against constant α; decaying schedules drawn as labelled points."""
    constant: dict[float, list[dict]] = defaultdict(list)
    schedules: dict[str, list[dict]] = defaultdict(list)
    for js in jobs.values():
        for job in js:
            cfg = _job_config(job)
            if cfg is None or "teacher_mix_alpha" not in cfg.objective:  # MiniLLM-style runs only
                continue
            metrics = metric_of(job)
            if metrics is None:
                continue
            o = cfg.objective
            if o.get("alpha_schedule", "constant") == "constant":
                constant[float(o.teacher_mix_alpha)].append(metrics)
            else:
                schedules[f"{o.alpha_schedule} {o.teacher_mix_alpha}→{o.alpha_end}"].append(metrics)
    if len(constant) < 3:  # an α study, not an ablation that happens to switch mixing off
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, label in ((axes[0], "rougeL", "test Rouge-L"), (axes[1], "valid_rate", "test validity %")):
        xs = sorted(constant)
        stats = [
            _mean_std([m[key] for m in constant[a] if m.get(key) is not None] or [float("nan")]) for a in xs
        ]
        ax.errorbar(
            xs, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3, label="constant α"
        )
        for i, (name, runs) in enumerate(sorted(schedules.items())):
            mean, std = _mean_std([m[key] for m in runs if m.get(key) is not None] or [float("nan")])
            ax.errorbar(
                [xs[-1] * 1.15 + 0.02 * i],
                [mean],
                yerr=[std],
                marker="s",
                capsize=3,
                color=f"C{i + 1}",
                label=name,
            )
        ax.set_xlabel("teacher-mix α")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scaling_plot(jobs: dict[str, list[Path]], metric_of, path: Path) -> Path | None:
    """Test Rouge-L and validity against teacher size (fixed student) and student size (fixed teacher), per objective."""
    points: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    fixed: dict[str, set[int]] = {"teacher": set(), "student": set()}
    rows = []
    for js in jobs.values():
        for job in js:
            metrics = metric_of(job)
            if metrics is None or not metrics.get("teacher_params") or not metrics.get("student_params"):
                continue
            rows.append(metrics)
            fixed["teacher"].add(metrics["teacher_params"])
            fixed["student"].add(metrics["student_params"])
    if len(fixed["teacher"]) < 2 and len(fixed["student"]) < 2:
        return None
    # the axis a run belongs to: the size that differs from the most common (fixed) one
    common_student = statistics.mode([r["student_params"] for r in rows])
    common_teacher = statistics.mode([r["teacher_params"] for r in rows])
    for r in rows:
        if r["student_params"] == common_student:
            points[("teacher", r["objective"])][r["teacher_params"]].append(r)
        if r["teacher_params"] == common_teacher:
            points[("student", r["objective"])][r["student_params"]].append(r)
    objectives = sorted({objective for _, objective in points})
    metrics = [("rougeL", "test Rouge-L"), ("valid_rate", "test valid %")]
    metrics = [(k, label) for k, label in metrics if any(r.get(k) is not None for r in rows)]
    plt = _pyplot()
    fig, axes = plt.subplots(len(metrics), 2, figsize=(9, 3.2 * len(metrics)), squeeze=False)
    for row, (key, label) in enumerate(metrics):
        for ax, axis in zip(axes[row], ("teacher", "student"), strict=True):
            for (kind, objective), by_size in sorted(points.items()):
                if kind != axis:
                    continue
                i = objectives.index(objective)  # one colour per objective in every panel
                values = {x: [r[key] for r in rs if r.get(key) is not None] for x, rs in by_size.items()}
                xs = sorted(x for x, v in values.items() if v)
                stats = [_mean_std(values[x]) for x in xs]
                ax.errorbar(
                    [x / 1e6 for x in xs],
                    [s[0] for s in stats],
                    yerr=[s[1] for s in stats],
                    marker="o",
                    capsize=3,
                    label=objective,
                    color=f"C{i % 10}",
                )
            ax.set_xscale("log")
            ax.set_xlabel(f"{axis} parameters (M)")
            ax.set_ylabel(label)
            if row == 0:
                ax.set_title(f"{axis} size varies, the other fixed", fontsize=9)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
