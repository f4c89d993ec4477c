"""Seconds and peak memory per MiniLLM round for a teacher / student pair, as training runs it.

``python experiments/smollm2_distill/measure_round.py [overrides of minillm.run ...]`` is ``python -m
minillm.run`` with a stopwatch around each round of the objective's module (``training_step``: the rollout,
then the inner epochs of updates) and around its rollout (``_start_round``), and the process's peak resident
memory (``ru_maxrss``) read before the first round, after each rollout, after each update and after each
round. It writes ``rounds.json`` into the run
folder and prints one line per round. Give the run few rounds and no validation inside them (for example
``trainer.max_steps`` = rounds × updates per round, ``trainer.val_check_interval`` above the rounds), and
``eval.compare=false`` so that only training is timed. Commands and numbers: README.md beside this file.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from hydra.utils import get_class
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def instrument(module_class, record: list[dict], out: dict) -> None:
    """Wrap the module's round (``training_step``) and rollout (``_start_round``) with timers, and read the
    peak memory after the rollout and after each update (``_update``)."""
    step, start_round, update = module_class.training_step, module_class._start_round, module_class._update

    def timed_start_round(self, batch):
        began = time.perf_counter()
        start_round(self, batch)
        out["rollout_s"] = time.perf_counter() - began
        out["after_rollout_mib"] = peak_rss_mib()

    def measured_update(self, mb):
        result = update(self, mb)
        out.setdefault("after_updates_mib", []).append(round(peak_rss_mib()))
        return result

    def timed_step(self, batch, batch_idx):
        if not record:
            out["before_first_round_mib"] = peak_rss_mib()
        began = time.perf_counter()
        result = step(self, batch, batch_idx)
        seconds = time.perf_counter() - began
        row = {
            "round": len(record),
            "seconds": round(seconds, 2),
            "rollout_seconds": round(out.pop("rollout_s", float("nan")), 2),
            "global_step": int(self.global_step),
            "peak_rss_mib": round(peak_rss_mib()),
            # the peak is monotone: the phase after which it rose is where the memory went
            "peak_rss_after_rollout_mib": round(out.pop("after_rollout_mib", float("nan"))),
            "peak_rss_after_each_update_mib": out.pop("after_updates_mib", []),
        }
        record.append(row)
        print(f"round {row['round']}: {row}", flush=True)
        return result

    module_class.training_step = timed_step
    module_class._start_round = timed_start_round
    module_class._update = measured_update


def main() -> None:
    import minillm.run

    args = sys.argv[1:]
    run_dir = next((a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")), None)
    if run_dir is None:
        sys.exit("give hydra.run.dir=DIR: rounds.json is written there")
    objective = next((a.split("=", 1)[1] for a in args if a.startswith("objective=")), "reverse_kld")
    target = OmegaConf.load(ROOT / "conf" / "objective" / f"{objective}.yaml").module._target_
    record: list[dict] = []
    out: dict = {}
    instrument(get_class(target), record, out)
    started = time.perf_counter()
    try:
        minillm.run.main()  # Hydra reads the overrides from sys.argv
    finally:
        summary = {
            "overrides": args,
            "rounds": record,
            "peak_rss_before_first_round_mib": round(out.get("before_first_round_mib", float("nan"))),
            "peak_rss_mib": round(peak_rss_mib()),
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "rounds.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps({k: v for k, v in summary.items() if k != "rounds"}), flush=True)


if __name__ == "__main__":
    main()
