"""Toy problems small enough to compute exactly: ``experiment=toy_gmm`` and ``experiment=toy_sequences``.

``run_toy(cfg)`` is what ``python -m minillm.run experiment=toy_…`` calls instead of the training
pipeline; it writes ``results.json``, ``summary.md`` and a PNG into the run directory.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from minillm.errors import MinillmError

log = logging.getLogger(__name__)
TASKS = ("train", "toy_gmm", "toy_sequences")


def run_toy(cfg) -> dict:
    task = str(cfg.task)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = OmegaConf.to_container(cfg.toy, resolve=True)
    torch.set_num_threads(int(cfg.fit.get("num_threads") or 1))
    started = time.perf_counter()
    if task == "toy_gmm":
        from minillm.toys.gmm import plot_gmm, run_gmm

        results, curves = run_gmm(params)
        plot_gmm(curves, results, out / "toy_gmm.png")
        summary = gmm_summary(results)
        metric = results["reverse_fit"]["reverse_kl"]
    elif task == "toy_sequences":
        from minillm.toys.sequences import plot_sequences, run_sequences

        results = run_sequences(params)
        plot_sequences(results, out / "toy_sequences.png")
        summary = sequences_summary(results)
        metric = results["minillm"]["reverse_kl"] if "minillm" in results else None
    else:
        raise MinillmError(f"task={task!r}; choose one of {list(TASKS)}")
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["config"] = {"task": task, "run_name": str(cfg.run_name), "toy": params}
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
