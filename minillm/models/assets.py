"""``make assets``: rebuild the embedded default's tokenizer, teacher and student init.

The pipeline of the paper at toy scale, reproducible from this command:
1. a byte-level BPE tokenizer trained on the bundled train split;
2. the teacher: a Llama-style model (``student=tiny_llama_teacher_size``) trained from scratch with SFT
   until its validation loss plateaus, selected by lowest validation loss;
3. the student init: a much smaller model (``student=tiny_llama_xs``) trained the same way to its own
   plateau, selected by lowest validation loss.
Each stage is an ordinary ``python -m minillm.run objective=sft`` run; its best model is copied into
``assets/embedded/`` with a manifest of how it was made. Usage:
``python -m minillm.models.assets [--teacher-epochs N] [--student-epochs N] [--only teacher|student|tokenizer]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from minillm.cli import quiet_libraries, user_errors

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "assets" / "embedded"


def build_tokenizer(vocab_size: int, seed: int) -> Path:
    from minillm.data.bundled import make_splits
    from minillm.models.tiny import train_tokenizer

    train = make_splits(seed=seed)["train"]
    texts = [f"{r['instruction']}\n{r['context']}\n{r['response']}" for r in train]
    folder = ASSETS / "tokenizer"
    train_tokenizer(texts, vocab_size, folder)
    print(f"tokenizer: {vocab_size} tokens trained on {len(texts)} train records -> {folder}", flush=True)
    return folder


def sft_stage(name: str, student_preset: str, epochs: int, lr: float, extra: list[str], resume: bool) -> dict:
    """Train one model with SFT from scratch and copy its best (lowest val loss) weights into assets/.

    With ``resume``, an interrupted build continues from its last checkpoint instead of starting over.
    """
    run_dir = ROOT / ".cache" / "assets-build" / name
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume and last.is_file():
        kept = run_dir.parent / f"{name}-resume.ckpt"
        shutil.copy(last, kept)
        extra = [*extra, f"ckpt_path={kept}"]
        print(f"resuming {name} from {kept}", flush=True)
    elif run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [
        sys.executable,
        "-m",
        "minillm.run",
        "objective=sft",
        f"student={student_preset}",
        "teacher=none",
        f"tokenizer.path={ASSETS / 'tokenizer'}",
        f"trainer.max_epochs={epochs}",
        f"optim.lr={lr}",
        "select.monitor=val/loss",
        "select.mode=min",
        "eval.compare=false",
        "logger=csv",
        f"run_name=assets-{name}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    print("running:", " ".join(cmd[1:]), flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    results = json.loads((run_dir / "results.json").read_text())
    target = ASSETS / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(run_dir / "best_model", target)
    return {
        "preset": student_preset,
        "epochs": epochs,
        "lr": lr,
        "train_seconds": results["train_seconds"],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "best_val_loss": results["best_score"],
        "test_rougeL": results["test/rougeL"],
        "test_valid_rate": results["test/valid_rate"],
        "command": "python -m " + " ".join(cmd[2:]),
    }


@user_errors
def main(argv: list[str] | None = None) -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["tokenizer", "teacher", "student"], default=None)
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--teacher-epochs", type=int, default=16)
    parser.add_argument("--student-epochs", type=int, default=30)
    parser.add_argument("--teacher-lr", type=float, default=2e-3)
    parser.add_argument("--student-lr", type=float, default=3e-3)
    parser.add_argument("--student-preset", default="tiny_llama_xs", help="conf/student/ preset of the init")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted build from its last checkpoint"
    )
    parser.add_argument("extra", nargs="*", help="extra Hydra overrides for both SFT stages")
    args = parser.parse_args(argv)
    ASSETS.mkdir(parents=True, exist_ok=True)
    manifest_path = ASSETS / "manifest.json"
    built = {}
    if args.only in (None, "tokenizer"):
        build_tokenizer(args.vocab_size, args.seed)
        built["tokenizer"] = {"vocab_size": args.vocab_size, "data_seed": args.seed}
    if args.only in (None, "teacher"):
        built["teacher"] = sft_stage(
            "teacher",
            "tiny_llama_teacher_size",
            args.teacher_epochs,
            args.teacher_lr,
            args.extra,
            args.resume,
        )
    if args.only in (None, "student"):
        built["student_init"] = sft_stage(
            "student_init", args.student_preset, args.student_epochs, args.student_lr, args.extra, args.resume
        )
    # Read the manifest only now: `--only teacher` and `--only student` may run side by side.
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest.update(built)
    manifest.pop("note", None)
    manifest_path.write_text(json.dumps(manifest, indent=2))
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
