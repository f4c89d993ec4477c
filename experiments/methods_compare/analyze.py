"""Issue 16's study: every method in one loop, at equal wall-clock time and at equal optimizer steps.

Reads the jobs of ``experiment=methods_compare`` (one folder per arm, budget and training seed, each with
``results.json``, ``timing.json`` and ``config.yaml``) and, optionally, the ``minillm.evaluate`` results of
the init and the teacher on the same prompts and seeds; writes ``report.md`` and ``methods.png`` into
``--out``:

    python experiments/methods_compare/analyze.py multirun/methods_compare \
        --init outputs/mc_eval/init/results.json --teacher outputs/mc_eval/teacher/results.json \
        --out experiments/results/methods_compare

Each job's score is its mean over the sampling seeds; a method's is the mean ± std over training seeds. Its
difference from the continued-SFT control carries a 95% interval over training seeds,
diff ± t(0.975, n−1)·sqrt(s_m²/n_m + s_sft²/n_sft) with the smaller n (conservative). Seconds per optimizer
step are timing.json's (training batches only: rollouts and student samples included, validation not),
averaged over the jobs of a method and budget.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # Student's t, two-sided 95%
ORDER = ["sft", "kd", "seqkd", "minillm", "onpolicy_rkl", "token_kd", "gkd", "distillm", "distillm2", "taid"]
LABELS = {
    "sft": "SFT, continued (control)",
    "kd": "KD (forward KL + CE, gold)",
    "seqkd": "SeqKD",
    "minillm": "MiniLLM (reverse_kld)",
    "onpolicy_rkl": "on-policy reverse-KL reward (γ = 0)",
    "token_kd": "token reverse KL on student samples",
    "gkd": "GKD (JSD 0.1, λ 0.5)",
    "distillm": "DistiLLM (skew KL 0.1, adaptive)",
    "distillm2": "DistiLLM-2 (contrastive skew KLs)",
    "taid": "TAID (t 0.4 → 1)",
}
BUDGETS = ("equal_time", "equal_steps")


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def diff_interval(values: list[float], control: list[float]) -> tuple[float, float]:
    m, s = mean_std(values)
    mc, sc = mean_std(control)
    n = min(len(values), len(control))
    if n < 2:
        return m - mc, float("nan")
    half = T975.get(n - 1, 1.96) * math.sqrt(s**2 / len(values) + sc**2 / len(control))
    return m - mc, half


def read_job(folder: Path) -> dict | None:
    path = folder / "results.json"
    if not path.is_file():
        return None
    res = json.loads(path.read_text())
    cfg = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"))
    timing_path = folder / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    return {
        "arm": cfg["arm_name"],
        "budget": cfg["budget"],
        "seed": cfg["seed"],
        "objective": cfg["objective"]["name"],
        "lr": cfg["optim"]["lr"],
        "rougeL": res["test/rougeL"],
        "valid": res["test/valid_rate"],
        "length": res["eval"]["trained student"]["test"]["length"],
        "n_prompts": res["eval"]["trained student"]["test"]["n"],
        "sampling_seeds": res["eval"]["trained student"]["test"]["seeds"],
        "train_seconds": res["train_seconds"],
        "global_step": res["global_step"],
        "selected": bool(res.get("best_checkpoint")),
        "seconds_per_step": timing.get("seconds_per_step"),
    }


def evaluated(path: Path | None) -> dict | None:
    if path is None:
        return None
    res = json.loads(Path(path).read_text())
    (model,) = res["eval"]
    (split,) = res["eval"][model]
    out = res["eval"][model][split]
    return {"rougeL": out["rougeL"], "valid": out["valid_rate"], "n": out["n"], "seeds": out["seeds"]}


def fmt(m: float, s: float | None = None, digits: int = 1) -> str:
    if math.isnan(m):
        return "–"
    text = f"{m:.{digits}f}"
    return text if s is None or math.isnan(s) else f"{text} ± {s:.{digits}f}"


def fmt_diff(d: float, half: float) -> str:
    if math.isnan(half):
        return f"{d:+.1f}"
    return f"{d:+.1f} [{d - half:+.1f}, {d + half:+.1f}]"


def budget_table(jobs: dict[str, list[dict]], budget: str) -> list[str]:
    control = jobs.get("sft", [])
    lines = [
        "| method | seeds | Rouge-L | Δ vs SFT [95% CI] | valid % | Δ vs SFT [95% CI] | steps | s / step | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in ORDER:
        runs = jobs.get(arm)
        if not runs:
            continue
        rouge = [r["rougeL"] for r in runs]
        valid = [r["valid"] for r in runs]
        cells = [
            LABELS.get(arm, arm),
            str(len(runs)),
            fmt(*mean_std(rouge)),
            "–" if arm == "sft" else fmt_diff(*diff_interval(rouge, [r["rougeL"] for r in control])),
            fmt(*mean_std(valid)),
            "–" if arm == "sft" else fmt_diff(*diff_interval(valid, [r["valid"] for r in control])),
            fmt(mean_std([r["global_step"] for r in runs])[0], digits=0),
            fmt(mean_std([r["seconds_per_step"] for r in runs])[0], digits=3),
            fmt(mean_std([r["train_seconds"] for r in runs])[0], digits=0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def cost_table(by_budget: dict[str, dict[str, list[dict]]]) -> list[str]:
    lines = [
        "| method | s / step (equal time) | s / step (equal steps) | × SFT's | steps in equal time |",
        "|---|---|---|---|---|",
    ]
    sft = mean_std([r["seconds_per_step"] for r in by_budget.get("equal_steps", {}).get("sft", [])])[0]
    for arm in ORDER:
        t = by_budget.get("equal_time", {}).get(arm, [])
        s = by_budget.get("equal_steps", {}).get(arm, [])
        if not t and not s:
            continue
        per_step = mean_std([r["seconds_per_step"] for r in s])[0]
        lines.append(
            f"| {LABELS.get(arm, arm)} | {fmt(mean_std([r['seconds_per_step'] for r in t])[0], digits=3)} | "
            f"{fmt(per_step, digits=3)} | {fmt(per_step / sft, digits=1) if sft == sft else '–'} | "
            f"{fmt(mean_std([r['global_step'] for r in t])[0], digits=0)} |"
        )
    return lines


def plot(by_budget: dict[str, dict[str, list[dict]]], refs: dict[str, dict | None], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
    arms = [a for a in ORDER if any(a in by_budget.get(b, {}) for b in BUDGETS)]
    width = 0.38
    for ax, metric, title in ((axes[0], "rougeL", "test Rouge-L"), (axes[1], "valid", "test validity %")):
        for k, budget in enumerate(BUDGETS):
            means, stds = [], []
            for arm in arms:
                m, s = mean_std([r[metric] for r in by_budget.get(budget, {}).get(arm, [])])
                means.append(m)
                stds.append(s)
            xs = [i + (k - 0.5) * width for i in range(len(arms))]
            ax.bar(xs, means, width, yerr=stds, capsize=3, label=budget.replace("_", " "))
        for name, ref in refs.items():
            if ref is not None:
                ax.axhline(ref[metric], ls="--", lw=1, color="k" if name == "init" else "tab:red", label=name)
        ax.set_xticks(range(len(arms)), arms, rotation=40, ha="right")
        ax.set_title(title)
        values = [
            r[metric]
            for b in BUDGETS
            for runs in by_budget.get(b, {}).values()
            for r in runs
            if r[metric] is not None
        ]
        values += [ref[metric] for ref in refs.values() if ref is not None]
        if values:
            ax.set_ylim(min(values) - 3, max(values) + 3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = out / "methods.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the sweep folder (multirun/methods_compare)")
    parser.add_argument("--init", type=Path, default=None, help="minillm.evaluate results of the init")
    parser.add_argument("--teacher", type=Path, default=None, help="minillm.evaluate results of the teacher")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    by_budget: dict[str, dict[str, list[dict]]] = {b: defaultdict(list) for b in BUDGETS}
    missing = []
    for folder in sorted(p for p in args.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        job = read_job(folder)
        if job is None:
            missing.append(folder.name)
            continue
        by_budget[job["budget"]][job["arm"]].append(job)
    refs = {"init": evaluated(args.init), "teacher": evaluated(args.teacher)}
    some = next(r for b in by_budget.values() for runs in b.values() for r in runs)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# methods_compare: report",
        "",
        f"Test split, first {some['n_prompts']} prompts × sampling seeds {some['sampling_seeds']}; each cell the "
        "mean ± std over training seeds; Δ: difference from the continued-SFT control with a 95% interval over "
        "training seeds. s / step: training batches only (timing.json).",
        "",
    ]
    for name, ref in refs.items():
        if ref is not None:
            lines.append(
                f"- {name}: Rouge-L {ref['rougeL']:.1f}, valid {ref['valid']:.1f} % ({ref['n']} prompts, "
                f"seeds {ref['seeds']})"
            )
    for budget in BUDGETS:
        lines += ["", f"## {budget.replace('_', ' ')}", "", *budget_table(by_budget[budget], budget)]
    lines += ["", "## Cost per optimizer step", "", *cost_table(by_budget)]
    if missing:
        lines += ["", "Jobs without results: " + ", ".join(missing)]
    figure = plot(by_budget, refs, args.out)
    if figure is not None:
        lines += ["", f"![methods]({figure.name})"]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    rows = {
        b: {arm: [{k: v for k, v in r.items()} for r in runs] for arm, runs in by_budget[b].items()}
        for b in BUDGETS
    }
    (args.out / "jobs.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
