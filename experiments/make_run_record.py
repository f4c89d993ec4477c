"""Writes a `make run` record (experiments/results/bench/make_run_<date>.json) from the results.json of runs
made two at a time side by side.

Usage: python experiments/make_run_record.py OUT.json "WHAT" NAME=RUN_DIR NAME=RUN_DIR [...]
(each "WHAT" and its two NAME=RUN_DIR form one pair; the file is replaced). The runs were
`python -m minillm.run trainer.max_time=00:00:03:00 fit.num_threads=1 [override] hydra.run.dir=RUN_DIR`,
the two of a pair started together on the 2-core machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEYS = ("global_step", "train_seconds", "test/rougeL", "test/valid_rate")


def main(argv: list[str]) -> int:
    out, rest = Path(argv[0]), argv[1:]
    pairs = []
    while rest:
        what, first, second, rest = rest[0], rest[1], rest[2], rest[3:]
        runs = {}
        for item in (first, second):
            name, run_dir = item.split("=", 1)
            results = json.loads((Path(run_dir) / "results.json").read_text())
            runs[name] = {key: results[key] for key in KEYS}
            timing = Path(run_dir) / "timing.json"  # the run's training-batch seconds, where it wrote them
            if timing.is_file():
                runs[name]["seconds_per_step"] = json.loads(timing.read_text())["seconds_per_step"]
        pairs.append({"what": what, "runs": runs})
    out.write_text(json.dumps({"pairs": pairs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
