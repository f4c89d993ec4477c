"""The CSV log of a run that goes on from another run's checkpoint."""

from __future__ import annotations

from pathlib import Path


def continue_csv(source: Path, run_dir: Path) -> None:
    """``ckpt_path=last`` picked a run beside this one: this run's CSV starts with that run's rows (those
    after the checkpoint are dropped by the logger); that run's folder is only read."""
    import shutil

    src, dst = source / "csv" / "metrics.csv", run_dir / "csv" / "metrics.csv"
    if src.is_file() and not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
