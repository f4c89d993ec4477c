"""Toy problems small enough to compute exactly: ``experiment=toy_gmm`` and ``experiment=toy_sequences``.

Each is a ``task`` (``gmm_task``, ``sequences_task``): ``python -m minillm.run experiment=toy_…`` calls it
instead of the training pipeline; it writes ``results.json``, ``summary.md`` and a PNG into the run
directory and returns its headline number to a Hydra sweeper.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def gmm_task(cfg) -> float:
    """The paper's Figure 2: one Gaussian fitted to a mixture by forward and by reverse KL (reverse KL)."""
    from minillm.toys.gmm import plot_gmm, run_gmm

    def solve(params: dict, out: Path) -> tuple[dict, float]:
        results, curves = run_gmm(params)
        plot_gmm(curves, results, out / "toy_gmm.png")
        return results, results["reverse_fit"]["reverse_kl"]

    return run_toy(cfg, "toy_gmm", solve, gmm_summary)["metric"]


def sequences_task(cfg) -> float | None:
    """Table 1's mechanism on Markov-chain sequences, exactly (MiniLLM's reverse KL, when it ran)."""
    from minillm.toys.sequences import plot_sequences, run_sequences

    def solve(params: dict, out: Path) -> tuple[dict, float | None]:
        results = run_sequences(params)
        plot_sequences(results, out / "toy_sequences.png")
        return results, results["minillm"]["reverse_kl"] if "minillm" in results else None

    return run_toy(cfg, "toy_sequences", solve, sequences_summary)["metric"]


def run_toy(cfg, name: str, solve: Callable[[dict, Path], tuple[dict, float | None]], summarise) -> dict:
    """Run one toy (``solve`` on ``cfg.toy``) into the run folder: results.json, summary.md, its figure."""
    from minillm.resume.run_folder import refuse_to_overwrite

    out = Path(cfg.output_dir)
    refuse_to_overwrite(out)  # an earlier toy run's results.json in a named folder
    out.mkdir(parents=True, exist_ok=True)
    params = OmegaConf.to_container(cfg.toy, resolve=True)
    torch.set_num_threads(int(cfg.fit.get("num_threads") or 1))
    started = time.perf_counter()
    results, metric = solve(params, out)
    summary = summarise(results)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["config"] = {"task": name, "run_name": str(cfg.run_name), "toy": params}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "summary.md").write_text(summary + "\n")
    OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    print(summary)
    print(f"results: {out / 'results.json'} ({results['seconds']} s)")
    return {"metric": metric, **results}


def gmm_summary(r: dict) -> str:
    t, m = r["target"], r["moments"]
    lines = [
        f"Target: mixture of {len(t['means'])} Gaussians, means {t['means']}, stds {t['stds']}, "
        f"weights {t['weights']}; its moments: μ={m['mu']:.3f}, σ={m['sigma']:.3f}.",
        "",
        "| fit | μ | σ | forward KL(p‖q) | reverse KL(q‖p) |",
        "|---|---|---|---|---|",
    ]
    for name in ("forward", "reverse"):
        f = r[f"{name}_fit"]
        lines.append(
            f"| {name} KL | {f['mu']:.3f} | {f['sigma']:.3f} | {f['forward_kl']:.3f} | {f['reverse_kl']:.3f} |"
        )
    return "\n".join(lines)


def sequences_summary(r: dict) -> str:
    w = r["world"]
    lines = [
        f"Teacher: mixture of {w['n_chains']} Markov chains, vocabulary {w['vocab']}, length {w['length']} "
        f"({w['sequences']} sequences, {r['init']['n_never']} of them with p < threshold, teacher mass on "
        f"those {r['init']['teacher_mass_on_never']:.2e}). Student: one Markov chain. Mean ± std over seeds.",
        "",
        "| method | forward KL(p‖q) | reverse KL(q‖p) | mass on never-sequences | ExAccErr(L) % | entropy |",
        "|---|---|---|---|---|---|",
    ]
    init = r["init"]
    lines.append(
        f"| student init | {init['forward_kl']:.3f} | {init['reverse_kl']:.3f} | {init['mass_on_never']:.3f} "
        f"| {init['exaccerr_at_L']:.1f} | {init['student_entropy']:.2f} |"
    )
    for m in ("forward_kld", "seqkd", "minillm", "minillm_no_mix", "reverse_kld_exact"):
        if m not in r:
            continue
        d = r[m]
        cells = [f"{d[k]:.3f} ± {d[k + '_std']:.3f}" for k in ("forward_kl", "reverse_kl", "mass_on_never")]
        cells.append(f"{d['exaccerr_at_L']:.1f} ± {d['exaccerr_at_L_std']:.1f}")
        cells.append(f"{d['student_entropy']:.2f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
