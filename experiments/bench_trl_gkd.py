"""Optional: time TRL's GKDTrainer on the pair and batch that `make bench` uses, for its GKD comparison.

Not part of minillm (TRL is not a dependency, and nothing imports this file). Run it with a separate
environment that has TRL, for example::

    python3 -m venv /tmp/trlvenv && /tmp/trlvenv/bin/pip install torch==2.13.0 trl
    /tmp/trlvenv/bin/python experiments/bench_trl_gkd.py            # then: make bench

It writes ``experiments/results/bench/trl_gkd.json``, which ``python -m minillm.bench`` reads (when the
batch size and lengths match) to report its GKD-equivalent step throughput against GKDTrainer's.

The GKDTrainer is configured as the on-policy token reverse-KL step that minillm's GKD-equivalent
configuration runs: ``lmbda=1`` (every batch sampled from the student), ``beta=1`` (reverse KL),
temperature 1, no top-k / top-p, fp32 on CPU, gradient checkpointing off, AdamW with grad-norm clip 1.
EOS is switched off so every row decodes exactly ``--response-len`` tokens (as in the benchmark).
Models come from the same places as the benchmark: ``assets/embedded/{teacher,student_init}`` when built,
else random init of ``conf/student/tiny_llama_teacher_size.yaml`` / ``conf/student/tiny_llama.yaml``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets" / "embedded"


def build(arch_file: Path, vocab: int, eos: int, seed: int):
    import torch
    import yaml
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = dict(yaml.safe_load(arch_file.read_text())["arch"])
    model_type = arch.pop("model_type")
    config = AutoConfig.for_model(
        model_type, vocab_size=vocab, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, **arch
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def tokenizer_for(vocab: int):
    """The embedded tokenizer when built; else a word-level stand-in (GKD only needs its pad id)."""
    from tokenizers import Tokenizer, models
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (ASSETS / "tokenizer" / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(ASSETS / "tokenizer"))
        tok.pad_token = tok.pad_token or tok.eos_token
        return tok
    words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t1"))
    return PreTrainedTokenizerFast(tokenizer_object=words, eos_token="t0", pad_token="t0")


def load_pair(args):
    from transformers import AutoModelForCausalLM

    tok = tokenizer_for(args.vocab_size)
    vocab, eos = len(tok), tok.eos_token_id
    pair, sources = {}, {}
    for i, (key, folder, arch) in enumerate(
        (
            ("teacher", ASSETS / "teacher", args.teacher_arch),
            ("student", ASSETS / "student_init", args.student_arch),
        )
    ):
        if folder.is_dir() and not args.random_init:
            pair[key], sources[key] = AutoModelForCausalLM.from_pretrained(str(folder)), str(folder)
        else:
            pair[key], sources[key] = build(arch, vocab, eos, args.seed + i), f"random init of {arch}"
        pair[key].generation_config.eos_token_id = None  # fixed-length rows, as in the benchmark
    return tok, pair["teacher"], pair["student"], sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--response-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=2048, help="without the embedded tokenizer")
    parser.add_argument(
        "--teacher-arch", type=Path, default=ROOT / "conf/student/tiny_llama_teacher_size.yaml"
    )
    parser.add_argument("--student-arch", type=Path, default=ROOT / "conf/student/tiny_llama.yaml")
    parser.add_argument("--random-init", action="store_true", help="ignore assets/embedded")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments/results/bench/trl_gkd.json")
    args = parser.parse_args()

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    tok, teacher, student, sources = load_pair(args)
    vocab, eos = len(tok), tok.eos_token_id
    gen = torch.Generator().manual_seed(1)
    n_rows = args.batch_size * (args.steps + 1)
    ids = torch.randint(0, vocab - 1, (n_rows, args.prompt_len), generator=gen)
    ids = ids + (ids >= eos).long()  # no EOS inside prompts
    dataset = Dataset.from_dict({"prompt_ids": ids.tolist()})

    def collate(rows):
        prompts = torch.tensor([r["prompt_ids"] for r in rows])
        mask = torch.ones_like(prompts)
        # lmbda=1: the trainer replaces input_ids / labels with the student's own samples every step. The
        # placeholder completion only sets the loss normaliser, which the Trainer counts from these labels
        # before generation (all -100 would divide by zero).
        completion = prompts[:, :1].expand(-1, args.response_len)
        input_ids = torch.cat([prompts, completion], dim=1)
        labels = torch.cat([torch.full_like(prompts, -100), completion], dim=1)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "labels": labels,
            "prompts": prompts,
            "prompt_attention_mask": mask,
        }

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.starts, self.seconds = [], []

        def on_step_begin(self, *a, **k):
            self.starts.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            self.seconds.append(time.perf_counter() - self.starts[-1])

    class CheckedGKD(GKDTrainer):
        """Records the sampled sequence length, to confirm every row decoded response_len tokens."""

        lengths: list[int] = []

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            self.lengths.append(inputs["input_ids"].shape[1] - args.prompt_len)
            return loss

    config = GKDConfig(
        output_dir="/tmp/bench_trl_gkd",
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps + 1,
        lmbda=1.0,
        beta=1.0,
        temperature=1.0,
        max_new_tokens=args.response_len,
        learning_rate=1e-3,
        max_grad_norm=1.0,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=args.seed,
    )
    timer = StepTimer()
    trainer = CheckedGKD(
        model=student,
        teacher_model=teacher,
        args=config,
        data_collator=collate,
        train_dataset=dataset,
        processing_class=tok,
        callbacks=[timer],
    )
    # The trainer aligns the models' generation configs with the tokenizer's EOS, and generate() fills a
    # None EOS back from the model's config: switch EOS off everywhere and forbid it before response_len.
    for gen_config in (trainer.generation_config, student.generation_config):
        gen_config.eos_token_id = None
        gen_config.min_new_tokens = args.response_len
    trainer.train()
    if set(trainer.lengths) != {args.response_len}:
        raise SystemExit(f"GKDTrainer decoded {sorted(set(trainer.lengths))} tokens, not {args.response_len}")
    timed = timer.seconds[1:]  # the first step is the warm-up
    result = {
        "trainer": "trl.experimental.gkd.GKDTrainer",
        "trl": trl.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "prompt_len": args.prompt_len,
        "response_len": args.response_len,
        "s_per_step": statistics.median(timed),
        "all_seconds": timed,
        "generated_tokens_per_s": args.batch_size * args.response_len / statistics.median(timed),
        "settings": "lmbda=1 beta=1 temperature=1 fp32 cpu, gradient checkpointing off, no EOS",
        "models": sources,
        "parameters": {
            "teacher": sum(p.numel() for p in teacher.parameters()),
            "student": sum(p.numel() for p in student.parameters()),
        },
        "load_avg": list(os.getloadavg()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
