"""TRL's ``GKDTrainer`` step and our GKD-equivalent round, timed alternately in one process."""

from __future__ import annotations

import copy
import logging
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict

import torch
from omegaconf import DictConfig

from minillm.bench.measure import Clock
from minillm.bench.models import Models
from minillm.bench.pairs import UPDATE_MODES
from minillm.bench.settings import Runtime, StepSettings, positive
from minillm.bench.step import step_runner
from minillm.errors import MinillmError
from minillm.rollout import static_decode

TARGET_GKD_SPEEDUP = 1.5
TRL_STEP = "gkd_one_teacher_pass"  # our step set against GKDTrainer's: what training runs at α = 0


def trl_gkd_comparison(models: Models, runtime: Runtime, cfg: DictConfig, s: StepSettings) -> dict:
    """TRL's ``GKDTrainer`` step and our ``s`` step, timed alternately in this process.

    GKDTrainer is configured as GKD's on-policy reverse-KL step (``lmbda=1``: every batch sampled from
    the student; ``beta=1``: reverse KL; temperature 1, no top-k / top-p; gradient checkpointing off;
    AdamW with gradient-norm clipping) on copies of the same teacher and student, with the same batch,
    prompt length and new tokens (EOS off, at least ``response_len`` new tokens, so every row decodes
    exactly that many), on the same device and torch threads. Its own ``train()`` loop drives it; a
    callback times each TRL step (``on_step_begin`` to ``on_step_end``: sampling, teacher and student
    forwards, loss, backward, clipping, optimizer and scheduler) and then runs and times one of our steps
    before TRL's next, so the two alternate (TRL, ours, TRL, ours, …) and drifts in background load hit
    both alike. The first ``trl_gkd.warmup`` pairs are untimed. The ratio is median(TRL) ÷ median(ours);
    each pair's own ratio gives its spread.

    Returns ``{"skipped": reason}`` when ``trl_gkd.enabled`` is false or TRL cannot be imported."""
    tc = cfg.get("trl_gkd") or {}
    if not tc.get("enabled", True):
        return {"skipped": "trl_gkd.enabled=false"}
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        import trl
        from datasets import Dataset
        from transformers import PrinterCallback, ProgressCallback, TrainerCallback
        from trl.experimental.gkd import GKDConfig, GKDTrainer
    except ImportError as e:
        return {
            "skipped": f"TRL is not importable ({e}); `pip install -e '.[bench]'` installs the pinned version"
        }
    repeats = positive(tc, "repeats", "trl_gkd.repeats")
    warmup = tc.get("warmup", 1)
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise MinillmError(f"trl_gkd.warmup={warmup!r}: must be a non-negative integer")
    for name in ("transformers", "trl", "accelerate", "datasets"):  # GKDTrainer's advice, progress, summary
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()

    updates = str(tc.get("updates") or "eager")  # our step's updates (fit.compile_updates)
    if updates not in UPDATE_MODES:
        raise MinillmError(f"trl_gkd.updates={updates!r}: must be one of {', '.join(UPDATE_MODES)}")
    s = s.with_round(compile_updates=updates == "compiled")
    ours = step_runner(models, runtime, cfg, s)
    decode = str(
        cfg.trl_gkd.get("decode") or "eager"
    )  # our step's sampler.decode (the compile: in the warm-up)
    if decode not in static_decode.MODES:
        raise MinillmError(f"trl_gkd.decode={decode!r}: must be one of {', '.join(static_decode.MODES)}")
    student, teacher = copy.deepcopy(models.student), copy.deepcopy(models.teacher)
    for model in (student, teacher):
        model.generation_config.eos_token_id = None  # fixed-length rows, as on our side
    tok = models.tokenizer  # GKDTrainer reads its pad id
    steps = warmup + repeats
    gen = torch.Generator().manual_seed(int(cfg.seed) + 5)
    ids = torch.randint(0, models.vocab_size - 1, (s.batch_size * steps, s.prompt_len), generator=gen)
    ids = ids + (ids >= models.eos_token_id).long()  # no EOS inside prompts, as make_prompts
    dataset = Dataset.from_dict({"prompt_ids": ids.tolist()})

    def collate(rows):
        prompts = torch.tensor([r["prompt_ids"] for r in rows])
        # lmbda=1: GKDTrainer replaces input_ids / labels with the student's samples every step. The
        # placeholder completion only sets the loss normaliser, which the Trainer counts from these labels
        # before sampling (all -100 would divide by zero).
        completion = prompts[:, :1].expand(-1, s.response_len)
        input_ids = torch.cat([prompts, completion], dim=1)
        labels = torch.cat([torch.full_like(prompts, -100), completion], dim=1)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "labels": labels,
            "prompts": prompts,
            "prompt_attention_mask": torch.ones_like(prompts),
        }

    timeline: list[dict] = []
    lengths: list[int] = []
    began = 0.0  # set when training starts

    class Alternate(TrainerCallback):
        """Times each GKDTrainer step, then runs one of ours before TRL's next."""

        def on_step_begin(self, *args, **kwargs):
            runtime.sync()
            self.start = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            runtime.sync()
            end = time.perf_counter()
            timeline.append({"side": "trl", "start": self.start - began, "seconds": end - self.start})
            start = time.perf_counter()
            with static_decode.decode_mode(decode):
                seconds = ours(Clock(runtime))
            timeline.append({"side": "ours", "start": start - began, "seconds": seconds})

    class CheckedGKD(GKDTrainer):
        """Records how many tokens each step sampled (all rows must decode ``response_len``)."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            lengths.append(inputs["input_ids"].shape[1] - s.prompt_len)
            return loss

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="minillm_bench_trl_") as out_dir, warnings.catch_warnings():
        # transformers' deprecation notices about names TRL 1.16 still uses: noise in the benchmark's output
        warnings.simplefilter("ignore", FutureWarning)
        config = GKDConfig(
            output_dir=out_dir,
            per_device_train_batch_size=s.batch_size,
            max_steps=steps,
            lmbda=1.0,
            beta=1.0,
            temperature=1.0,
            max_new_tokens=s.response_len,
            learning_rate=float(cfg.optim.get("lr", 1e-3)),
            max_grad_norm=float(cfg.get("grad_clip") or 1.0),
            bf16=runtime.dtype == "bf16",
            activation_checkpointing=False,  # TRL's configs default to True
            use_cpu=runtime.device.type == "cpu",
            report_to="none",
            save_strategy="no",
            logging_steps=10_000,
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=int(cfg.seed),
        )
        trainer = CheckedGKD(
            model=student,
            teacher_model=teacher,
            args=config,
            data_collator=collate,
            train_dataset=dataset,
            processing_class=tok,
            callbacks=[Alternate()],
        )
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        # GKDTrainer copies the tokenizer's EOS into its generation config, and generate() fills a None
        # EOS back from the model's: switch EOS off and forbid stopping before response_len.
        for gen_config in (trainer.generation_config, student.generation_config):
            gen_config.eos_token_id = None
            gen_config.min_new_tokens = s.response_len
        began = time.perf_counter()
        trainer.train()
    load_after = os.getloadavg()
    if set(lengths) != {s.response_len}:
        raise MinillmError(f"trl_gkd: GKDTrainer decoded {sorted(set(lengths))} tokens, not {s.response_len}")
    timed = timeline[2 * warmup :]
    theirs = [e["seconds"] for e in timed if e["side"] == "trl"]
    mine = [e["seconds"] for e in timed if e["side"] == "ours"]
    pairs = [t / o for t, o in zip(theirs, mine, strict=True)]
    return {
        "trainer": "trl.experimental.gkd.GKDTrainer",
        "trl": trl.__version__,
        "ours": TRL_STEP,
        "decode": decode,
        "updates": updates,
        "settings": asdict(s),
        "gkd_settings": "lmbda=1 beta=1 temperature=1, top_k=0 top_p=1, no EOS",
        "activation_checkpointing": bool(trainer.args.activation_checkpointing),
        "warmup": warmup,
        "repeats": repeats,
        "timeline": timeline,  # every step in the order it ran, the warm-up pairs first
        "trl_seconds": theirs,
        "ours_seconds": mine,
        "trl_s_per_step": statistics.median(theirs),
        "ours_s_per_step": statistics.median(mine),
        "speedup": statistics.median(theirs) / statistics.median(mine),
        "pair_ratios": pairs,
        "pair_ratio_min": min(pairs),
        "pair_ratio_max": max(pairs),
        "torch_threads": torch.get_num_threads(),
        "load_avg_before": list(load_before),
        "load_avg_after": list(load_after),
    }


# --------------------------------------------------------------------------- targets and report


def trl_target(trl: dict) -> dict:
    """The ≥ 1.5 × GKDTrainer target, from :func:`trl_gkd_comparison`'s record; no value when skipped."""
    speedup = trl.get("speedup")
    row = {
        "target": f"GKD-equivalent step as training runs it ({TRL_STEP}, sampler.decode="
        f"{trl.get('decode', 'eager')}"
        + (", fit.compile_updates" if trl.get("updates") == "compiled" else "")
        + ") ≥ 1.5 × TRL GKDTrainer's step throughput, timed alternately in this run",
        "value": speedup,
        "ok": None if speedup is None else speedup >= TARGET_GKD_SPEEDUP,
    }
    if "skipped" in trl:
        row["skipped"] = trl["skipped"]
    return row
