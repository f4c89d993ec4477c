"""Issue 17's study: does MiniLLM make the embedded student less valid, and where does it come from?

Reads the runs of ``experiment=validity_drop`` (one folder per arm and training seed, each with
``results.json`` and ``csv/metrics.csv``) and the ``minillm.evaluate`` results of the init and the teacher,
and writes ``report.md`` and ``trajectory.png`` into ``--out``:

    python experiments/validity_drop/analyze.py multirun/validity_drop \
        --init outputs/vd_eval/init_test/results.json --teacher outputs/vd_eval/teacher_test/results.json \
        --init-val outputs/vd_eval/init_val/results.json --out experiments/results/validity_drop

Intervals: each run's test score is its mean over 3 sampling seeds on the whole test split; an arm's
score is the mean over its training seeds. The difference from the init carries a 95% interval
diff ± t(0.975, n−1) · sqrt(s_arm² / n_arm + s_init² / n_init), s the standard deviation over training seeds
(arm) and over sampling seeds (init), with the smaller of the two degrees of freedom (conservative).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # Student's t, two-sided 95%
ORDER = ["full", "alpha0", "alpha_decay", "paper", "no_single_step", "lr3e-5", "ppo1", "select_valid", "sft"]


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def diff_interval(arm: list[float], ref_mean: float, ref_std: float, ref_n: int):
    m, s = mean_std(arm)
    n = len(arm)
    if n < 2:
        return m - ref_mean, float("nan")
    dof = min(n - 1, ref_n - 1)
    half = T975.get(dof, 1.96) * math.sqrt(s**2 / n + ref_std**2 / ref_n)
    return m - ref_mean, half


def read_run(folder: Path) -> dict | None:
    path = folder / "results.json"
    if not path.is_file():
        return None
    res = json.loads(path.read_text())
    cfg = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"))  # the run's resolved config
    obj = cfg["objective"]
    if obj.get("kind") == "on_policy":  # CSV steps are rounds: convert to optimizer steps
        per_round = obj["ppo_epochs"] * math.ceil(obj["num_rollouts"] / obj["mini_batch_size"])
    else:
        per_round = 1
    vals = []
    with (folder / "csv" / "metrics.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("val/valid_rate"):
                vals.append(
                    {
                        "opt_step": (int(float(row["step"])) + 1) * per_round,
                        "valid": float(row["val/valid_rate"]),
                        "rougeL": float(row["val/rougeL"]),
                    }
                )
    test = res["eval"]["trained student"]["test"]
    return {
        "arm": cfg["arm_name"],
        "seed": cfg["seed"],
        "rougeL": res["test/rougeL"],
        "valid": res["test/valid_rate"],
        "per_category": test["per_category"],
        "train_seconds": res["train_seconds"],
        "global_step": res["global_step"],
        "val": vals,
        "select_monitor": cfg["select"]["monitor"],
        "best_score": res.get("best_score"),
    }


def evaluated(path: Path) -> dict:
    res = json.loads(Path(path).read_text())
    (model,) = res["eval"]
    (split,) = res["eval"][model]
    out = res["eval"][model][split]
    per_seed_valid = out.get("valid_rate_per_seed")
    return {
        "rougeL": out["rougeL"],
        "rougeL_std": out["rougeL_std"],
        "valid": out["valid_rate"],
        "valid_std": out["valid_rate_std"],
        "n_seeds": len(out["seeds"]),
        "per_category": out["per_category"],
        "per_seed_valid": per_seed_valid,
        "valid_ci95": out.get("valid_rate_ci95"),
        "n": out["n"],
    }


def per_prompt(path: Path) -> dict[str, list]:
    res = json.loads(Path(path).read_text())
    (model,) = res["eval"]
    (split,) = res["eval"][model]
    out = res["eval"][model][split]
    return {"valid": out["valid_per_prompt"], "rougeL": out["rougeL_per_prompt"]}


def diagnose_rows(folder: Path) -> list[str]:
    """Exact token KLs and copying on held-out valid prompts (minillm.diagnose), per arm over seeds."""
    groups: dict[str, list[dict]] = defaultdict(list)
    settings = None
    for run in sorted(folder.iterdir()):
        path = run / "diagnose.json"
        if not path.is_file():
            continue
        d = json.loads(path.read_text())
        settings = settings or d["settings"]
        arm = "student init" if run.name == "init" else run.name.rsplit("-s", 1)[0]
        groups[arm].append(d)
    if not groups:
        return []

    def cell(runs, get, fmt="{:.2f}"):
        m, sd = mean_std([get(d) for d in runs])
        return fmt.format(m) + (f" ± {fmt.format(sd)}" if len(runs) > 1 else "")

    lines = [
        "",
        f"## What reverse KL buys (minillm.diagnose: first {settings['num_prompts']} valid prompts × seeds "
        f"{settings['seeds']}, temperature 1)",
        "",
        "Exact full-vocabulary token KLs, per token: KL(q‖p) on the student's own samples, KL(p‖q) on the "
        "teacher's; seq KL(q‖p): Monte Carlo log q(y) − log p(y) per student response. Copied: the share of "
        "the student's invalid answers that appear word for word among the teacher's samples for that "
        "prompt. Trained arms: mean ± std over training seeds (best_model of each run).",
        "",
        "| model | runs | KL(q‖p) /token | KL(p‖q) /token | seq KL(q‖p) | student valid % | teacher valid % "
        "| invalid copied % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in ["student init", *[a for a in ORDER if a in groups]]:
        runs = groups[arm]
        lines.append(
            f"| {arm} | {len(runs)} | {cell(runs, lambda d: d['kl']['student']['reverse_kl'])} | "
            f"{cell(runs, lambda d: d['kl']['teacher']['forward_kl'])} | "
            f"{cell(runs, lambda d: d['kl']['student']['seq_mc'], '{:.1f}')} | "
            f"{cell(runs, lambda d: d['validity']['student']['valid_rate'], '{:.1f}')} | "
            f"{cell(runs, lambda d: d['validity']['teacher']['valid_rate'], '{:.1f}')} | "
            f"{cell(runs, lambda d: d['copying']['copied_invalid_share'], '{:.1f}')} |"
        )
    return lines


def selection_rows(runs: list[dict]) -> list[str]:
    """Which validation each metric would select, and that validation's validity / Rouge-L."""
    lines = []
    for r in runs:
        if not r["val"]:
            continue
        by_rouge = max(r["val"], key=lambda v: v["rougeL"])
        by_valid = max(r["val"], key=lambda v: v["valid"])
        last = r["val"][-1]
        lines.append(
            f"| {r['arm']}-s{r['seed']} | {by_rouge['opt_step']} ({by_rouge['valid']:.1f} / {by_rouge['rougeL']:.1f}) "
            f"| {by_valid['opt_step']} ({by_valid['valid']:.1f} / {by_valid['rougeL']:.1f}) "
            f"| {last['opt_step']} ({last['valid']:.1f} / {last['rougeL']:.1f}) |"
        )
    return lines


def trajectory_plot(arms: dict[str, list[dict]], init_val: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, name in enumerate(a for a in ORDER if a in arms):
        for key, ax in (("valid", axes[0]), ("rougeL", axes[1])):
            by_step = defaultdict(list)
            for r in arms[name]:
                for v in r["val"]:
                    by_step[v["opt_step"]].append(v[key])
            steps = sorted(by_step)
            ax.plot(
                steps,
                [statistics.mean(by_step[s]) for s in steps],
                marker="o",
                ms=3,
                lw=1.2,
                color=f"C{i}",
                label=f"{name} (n={len(arms[name])})",
            )
    if init_val is not None:
        for key, ax in (("valid", axes[0]), ("rougeL", axes[1])):
            ax.axhline(init_val[key], color="k", ls="--", lw=1, label="student init")
    axes[0].set_title("validation validity % (mean over training seeds)", fontsize=9)
    axes[1].set_title("validation Rouge-L (mean over training seeds)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("optimizer steps", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument(
        "--init", type=Path, required=True, help="minillm.evaluate results.json of the init (test)"
    )
    ap.add_argument("--teacher", type=Path, required=True, help="... of the teacher (test)")
    ap.add_argument("--init-val", type=Path, help="... of the init on the validation slice (seed 0)")
    ap.add_argument(
        "--paired",
        nargs="*",
        default=[],
        metavar="ARM=RESULTS[,RESULTS...]",
        help="minillm.evaluate results.json of an arm's trained students on test (one per training seed): "
        "a paired bootstrap over prompts against the init, each prompt's score averaged over the runs",
    )
    ap.add_argument(
        "--diagnose",
        type=Path,
        help="a folder of minillm.diagnose run folders named <arm>-s<seed> (and 'init'): what reverse KL buys",
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    runs = [r for r in (read_run(f) for f in sorted(args.runs.iterdir()) if f.is_dir()) if r]
    arms: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        arms[r["arm"]].append(r)
    init, teacher = evaluated(args.init), evaluated(args.teacher)
    init_val = evaluated(args.init_val) if args.init_val else None
    args.out.mkdir(parents=True, exist_ok=True)

    lines = [
        "## Test split (500 prompts × 3 sampling seeds per model)",
        "",
        "Each arm: mean ± std over training seeds; Δ: the difference from the init with its 95% interval "
        "(t over training seeds and the init's sampling seeds). Steps: optimizer steps (500 each).",
        "",
        "| arm | seeds | Rouge-L | valid % | Δ Rouge-L vs init | Δ valid vs init | train s |",
        "|---|---|---|---|---|---|---|",
        f"| teacher | – | {teacher['rougeL']:.1f} ± {teacher['rougeL_std']:.1f} | "
        f"{teacher['valid']:.1f} ± {teacher['valid_std']:.1f} | | | |",
        f"| student init | – | {init['rougeL']:.1f} ± {init['rougeL_std']:.1f} | "
        f"{init['valid']:.1f} ± {init['valid_std']:.1f} | | | |",
    ]
    for name in [a for a in ORDER if a in arms] + sorted(set(arms) - set(ORDER)):
        rs = arms[name]
        rm, rsd = mean_std([r["rougeL"] for r in rs])
        vm, vsd = mean_std([r["valid"] for r in rs])
        dr, hr = diff_interval([r["rougeL"] for r in rs], init["rougeL"], init["rougeL_std"], init["n_seeds"])
        dv, hv = diff_interval([r["valid"] for r in rs], init["valid"], init["valid_std"], init["n_seeds"])
        secs = statistics.mean(r["train_seconds"] for r in rs)
        lines.append(
            f"| {name} | {','.join(str(r['seed']) for r in sorted(rs, key=lambda r: r['seed']))} | "
            f"{rm:.1f} ± {rsd:.1f} | {vm:.1f} ± {vsd:.1f} | {dr:+.1f} ± {hr:.1f} | {dv:+.1f} ± {hv:.1f} | {secs:.0f} |"
        )

    if args.paired:
        from minillm.evaluation.intervals import paired_bootstrap_diff

        init_vec = per_prompt(args.init)
        lines += [
            "",
            "Paired over the same 500 test prompts (each prompt's validity averaged over the arm's training "
            "seeds × 3 sampling seeds, against the init's 3 sampling seeds; percentile bootstrap over prompts, "
            "2000 resamples):",
            "",
            "| arm | runs | Δ valid vs init [95% interval] | Δ Rouge-L vs init [95% interval] |",
            "|---|---|---|---|",
        ]
        for spec in args.paired:
            name, _, paths = spec.partition("=")
            vecs = [per_prompt(Path(p)) for p in paths.split(",")]
            cells = []
            for key in ("valid", "rougeL"):
                pooled = [
                    None if any(v[key][i] is None for v in vecs) else statistics.mean(v[key][i] for v in vecs)
                    for i in range(len(init_vec[key]))
                ]
                diff, ci, _ = paired_bootstrap_diff(pooled, init_vec[key])
                cells.append(f"{diff:+.1f} [{ci[0]:+.1f}, {ci[1]:+.1f}]")
            lines.append(f"| {name} | {len(vecs)} | {cells[0]} | {cells[1]} |")

    lines += [
        "",
        "## Validation evidence (256 valid prompts, seed 0, every 64 optimizer steps)",
        "",
        "Mean over each run's validations, then mean ± std over training seeds"
        + (
            f"; the init scores {init_val['valid']:.1f} % valid / {init_val['rougeL']:.1f} Rouge-L on this slice."
            if init_val
            else "."
        ),
        "",
        "| arm | mean val valid % | last val valid % | mean val Rouge-L |",
        "|---|---|---|---|",
    ]
    for name in [a for a in ORDER if a in arms]:
        rs = [r for r in arms[name] if r["val"]]
        mv = mean_std([statistics.mean(v["valid"] for v in r["val"]) for r in rs])
        lv = mean_std([r["val"][-1]["valid"] for r in rs])
        mr = mean_std([statistics.mean(v["rougeL"] for v in r["val"]) for r in rs])
        lines.append(
            f"| {name} | {mv[0]:.1f} ± {mv[1]:.1f} | {lv[0]:.1f} ± {lv[1]:.1f} | {mr[0]:.1f} ± {mr[1]:.1f} |"
        )

    lines += [
        "",
        "## Selection: the validation each metric picks (step: val valid % / val Rouge-L)",
        "",
        "| run | by val Rouge-L (the default) | by val validity | last |",
        "|---|---|---|---|",
        *selection_rows(
            sorted(runs, key=lambda r: (ORDER.index(r["arm"]) if r["arm"] in ORDER else 99, r["seed"]))
        ),
    ]

    cats = sorted(init["per_category"])
    shown = [a for a in ("full", "alpha0", "sft") if a in arms]
    lines += [
        "",
        "## Validity per category (test; trained arms: mean over training seeds)",
        "",
        "| category | n | teacher | init | " + " | ".join(shown) + " |",
        "|---|---|---|---|" + "---|" * len(shown),
    ]
    for c in cats:
        cells = [f"{statistics.mean(r['per_category'][c]['valid_rate'] for r in arms[a]):.1f}" for a in shown]
        lines.append(
            f"| {c} | {init['per_category'][c]['n']} | {teacher['per_category'][c]['valid_rate']:.1f} | "
            f"{init['per_category'][c]['valid_rate']:.1f} | " + " | ".join(cells) + " |"
        )

    if args.diagnose:
        lines += diagnose_rows(args.diagnose)

    trajectory_plot(arms, init_val, args.out / "trajectory.png")
    lines += ["", "![trajectory](trajectory.png)", ""]
    text = "\n".join(lines)
    (args.out / "report.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
