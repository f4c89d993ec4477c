"""The smollm2_distill study in one table and two figures.

``python experiments/smollm2_distill/summarize.py multirun/smollm2_distill --out experiments/results/smollm2_distill``
reads each stage-2 run's ``results.json`` (``<objective>-<budget>-s<seed>/``), stage 1's runs (``teacher_sft/``,
``student_init/``), the exact-KL probes (``diagnose/<run>/diagnose.json``, ``diagnose/init/``) and the stage
times (``stages.tsv``), and writes ``summary.md``, ``scores.png`` (test Rouge-L and validity per method and
budget, each training seed a point) and ``kl.png`` (token-level reverse KL on the student's own samples and
forward KL on the teacher's, against the teacher, on held-out valid prompts). Each run's score is its mean over
the sampling seeds; a method's is the mean ± std over its training seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

METHODS = [  # (arm, name): stage 2, then issue 16's methods (stage 3)
    ("sft", "SFT, continued (control)"),
    ("kd", "KD (forward KL, kd_ratio 0.5)"),
    ("seqkd", "SeqKD"),
    ("minillm", "MiniLLM (reverse_kld, variant code, α 0.2)"),
    ("onpolicy_rkl", "on-policy reverse KL (γ 0)"),
    ("gkd", "GKD (JSD 0.5, λ 0.5)"),
    ("distillm", "DistiLLM (skew KL 0.1, adaptive replay)"),
    ("taid", "TAID"),
    ("distillm2", "DistiLLM-2 (on-policy student side)"),
]
BUDGETS = [("equal_time", "equal time (max_time 3 min)"), ("equal_steps", "equal steps (16)")]


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float], digits: int = 1) -> str:
    """mean ± std over the training seeds; one seed: its value alone; none: a dash."""
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    m, s = mean_std(present)
    return f"{m:.{digits}f}" if len(present) == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"


def load_runs(folder: Path) -> dict[tuple[str, str], list[dict]]:
    runs: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(folder.glob("*-s[0-9]/results.json")):
        objective, budget, _ = path.parent.name.rsplit("-", 2)
        result = json.loads(path.read_text())
        probe = folder / "diagnose" / path.parent.name / "diagnose.json"
        result["kl"] = json.loads(probe.read_text())["kl"] if probe.is_file() else None
        runs.setdefault((objective, budget), []).append(result)
    return runs


def kl_of(result: dict | None, side: str, kind: str) -> float | None:
    return None if not result else result[side][kind]


def summary(folder: Path) -> tuple[str, dict]:
    runs = load_runs(folder)
    teacher = json.loads((folder / "teacher_sft" / "results.json").read_text())
    init = json.loads((folder / "student_init" / "results.json").read_text())
    init_probe = folder / "diagnose" / "init" / "diagnose.json"
    init_kl = json.loads(init_probe.read_text())["kl"] if init_probe.is_file() else None
    t_eval, i_eval = init["eval"]["teacher"]["test"], init["eval"]["trained student"]["test"]
    zero = teacher["eval"]["student init"]["test"]
    stages = {}
    if (folder / "stages.tsv").is_file():
        for line in (folder / "stages.tsv").read_text().splitlines():
            name, seconds, status, *load = line.split("\t")
            stages[name] = (int(seconds), int(status), load[0] if load else "")
    lines = [
        f"Teacher zero-shot: Rouge-L {zero['rougeL']:.1f}, valid {zero['valid_rate']:.1f} %; after SFT "
        f"({teacher['global_step']} steps): {t_eval['rougeL']:.1f}, {t_eval['valid_rate']:.1f} %. Student init "
        f"(pruned, then {init['global_step']} SFT steps): {i_eval['rougeL']:.1f}, {i_eval['valid_rate']:.1f} % "
        f"(pruned, before SFT: {init['eval']['student init']['test']['rougeL']:.1f}, "
        f"{init['eval']['student init']['test']['valid_rate']:.1f} %).",
        "",
    ]
    if init_kl:
        lines += [
            f"Init against the teacher (exact token-level KL, nats/token, valid prompts): reverse KL on its own "
            f"samples {init_kl['student']['reverse_kl']:.3f}, forward KL on the teacher's "
            f"{init_kl['teacher']['forward_kl']:.3f}.",
            "",
        ]
    head = (
        "| method | budget | seeds | Rouge-L | valid % | steps | train s | s / step | reverse KL (own samples) | "
        "forward KL (teacher samples) |"
    )
    lines += [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for budget, budget_name in BUDGETS:
        for objective, name in METHODS:
            rs = runs.get((objective, budget), [])
            if not rs:
                continue
            lines.append(
                f"| {name} | {budget_name} | {len(rs)} | {fmt([r['test/rougeL'] for r in rs])} | "
                f"{fmt([r['test/valid_rate'] for r in rs])} | {fmt([r['global_step'] for r in rs], 0)} | "
                f"{fmt([r['train_seconds'] for r in rs], 0)} | "
                f"{fmt([r['train_seconds'] / max(1, r['global_step']) for r in rs], 1)} | "
                f"{fmt([kl_of(r['kl'], 'student', 'reverse_kl') for r in rs], 3)} | "
                f"{fmt([kl_of(r['kl'], 'teacher', 'forward_kl') for r in rs], 3)} |"
            )
    if stages:
        lines += ["", "| stage | seconds | exit status | load average at its start |", "|---|---|---|---|"]
        lines += [f"| {name} | {s} | {status} | {load} |" for name, (s, status, load) in stages.items()]
    data = {"runs": runs, "teacher": t_eval, "init": i_eval, "init_kl": init_kl}
    return "\n".join(lines) + "\n", data


def plots(data: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = data["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, ref_key, label in (
        (axes[0], "test/rougeL", "rougeL", "test Rouge-L"),
        (axes[1], "test/valid_rate", "valid_rate", "test valid %"),
    ):
        for b, (budget, budget_name) in enumerate(BUDGETS):
            for m, (objective, _) in enumerate(METHODS):
                values = [r[key] for r in runs.get((objective, budget), [])]
                x = m + (b - 0.5) * 0.3
                ax.scatter([x] * len(values), values, color=f"C{b}", label=budget_name if m == 0 else None)
                if values:
                    ax.hlines(statistics.mean(values), x - 0.12, x + 0.12, color=f"C{b}")
        ax.axhline(data["teacher"][ref_key], color="k", ls="--", lw=1, label="teacher (SFT)")
        ax.axhline(data["init"][ref_key], color="gray", ls=":", lw=1, label="student init")
        ax.set_xticks(range(len(METHODS)), [o for o, _ in METHODS], rotation=30, fontsize=8)
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "SmolLM2-135M-Instruct (SFT) → every-3rd-layer student (63.7M): 2 training seeds (methods after minillm: 1)"
    )
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=120)
    plt.close(fig)

    plot_kl(
        {key: [r["kl"] for r in rs if r["kl"]] for key, rs in runs.items()}, data["init_kl"], out / "kl.png"
    )


def plot_kl(points: dict[tuple[str, str], list[dict]], init_kl: dict | None, path: Path) -> None:
    """kl.png: per method and budget, each probe's reverse KL on the student's samples (left) and forward KL
    on the teacher's (right), nats/token; ``points`` maps (arm, budget) to ``diagnose.json``'s ``kl`` dicts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, side, kind, title in (
        (axes[0], "student", "reverse_kl", "reverse KL(q‖p) on the student's samples"),
        (axes[1], "teacher", "forward_kl", "forward KL(p‖q) on the teacher's samples"),
    ):
        for b, (budget, budget_name) in enumerate(BUDGETS):
            for m, (objective, _) in enumerate(METHODS):
                values = [kl[side][kind] for kl in points.get((objective, budget), [])]
                x = m + (b - 0.5) * 0.3
                ax.scatter([x] * len(values), values, color=f"C{b}", label=budget_name if m == 0 else None)
        if init_kl:
            ax.axhline(init_kl[side][kind], color="gray", ls=":", lw=1, label="student init")
        ax.set_xticks(range(len(METHODS)), [o for o, _ in METHODS], rotation=30, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("nats/token")  # short: a long label ran into the figure's title
    axes[0].legend(fontsize=8)
    fig.suptitle("Exact token-level KL to the teacher on held-out valid prompts (lower is closer)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    text, data = summary(args.folder)
    (args.out / "summary.md").write_text(text)
    plots(data, args.out)
    print(text)


if __name__ == "__main__":
    main()
