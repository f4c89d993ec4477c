"""MiniLLM's statistics across data-parallel ranks (issue 14): 2 processes over gloo on CPU.

N ranks holding B rollouts each, with ``RankPool`` all-reduces and DDP's gradient averaging, must compute
what one process holding all N·B rollouts computes: the same whitened advantages, the same loss and the
same gradient — here with responses of different lengths, and padded to different widths on the two ranks.
"""

from __future__ import annotations

import gc
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from minillm.objectives.policy_gradient import PGOptions, advantages, minillm_loss, token_rewards
from minillm.training.round import distributed_pool

V, B = 7, 3
WIDTHS = (5, 8)  # response positions on rank 0 and rank 1
LENGTHS = ((5, 2, 4), (8, 1, 6))  # valid response tokens per row (EOS included)


def rank_inputs(rank: int) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s rollouts, float64, from a seed of its own."""
    gen = torch.Generator().manual_seed(100 + rank)
    t = WIDTHS[rank]
    mask = torch.zeros(B, t)
    for row, n in enumerate(LENGTHS[rank]):
        mask[row, :n] = 1
    base = torch.randn(B, t, V, generator=gen, dtype=torch.float64)
    teacher_logits = torch.randn(B, t, V, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, V, (B, t), generator=gen)
    old = base.log_softmax(-1).gather(-1, ids[..., None])[..., 0] + 0.1 * torch.randn(B, t, generator=gen)
    mix = old - 0.3 * torch.rand(B, t, generator=gen, dtype=torch.float64)  # w = q_old / p̃ in [1, e^0.3]
    teacher_lp = teacher_logits.log_softmax(-1).gather(-1, ids[..., None])[..., 0]
    return dict(
        base=base, teacher_logits=teacher_logits, ids=ids, old=old, mix=mix, teacher=teacher_lp, mask=mask
    )


def pad_to(x: torch.Tensor, t: int) -> torch.Tensor:
    pad = [0, 0] * (x.dim() - 2) + [0, t - x.shape[1]]
    return torch.nn.functional.pad(x, pad)


def loss_and_grad(inputs, theta, options, pool=None):
    """The MiniLLM loss with logits = base + θ (θ: one shared (V,) parameter, like a model's bias)."""
    logits = inputs["base"] + theta
    logprobs = logits.log_softmax(-1).gather(-1, inputs["ids"][..., None])[..., 0]
    kwargs = {} if pool is None else {"pool": pool}
    loss, logs = minillm_loss(
        logits,
        inputs["teacher_logits"],
        logprobs,
        inputs["old"],
        inputs["teacher"],
        inputs["mix"],
        inputs["mask"],
        options,
        **kwargs,
    )
    return loss, logs


def options_under_test() -> PGOptions:
    return PGOptions.code()  # whitening, γ 0.95, remaining-length normalisation, clipping, ratio weights


def in_process_group(rank: int, body, world: int, init: str, out: str) -> None:
    """Run ``body(rank, world)`` in a gloo group and save what it returns to ``out/rank{rank}.pt``.

    The group is torn down only after every rank is done and after the DDP wrapper ``body`` made is gone:
    a process group still referenced (DDP's reducer holds it, in a reference cycle) is destroyed during
    interpreter shutdown instead, where gloo's threads can abort the process (SIGABRT, seen in CI)."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.save(body(rank, world), f"{out}/rank{rank}.pt")
        dist.barrier()
    finally:
        gc.collect()
        dist.destroy_process_group()


def spawn(body, tmp_path, deadline_s: float = 300.0) -> list[dict]:
    """Run ``body`` on 2 spawned ranks; return what each rank saved. Ranks still running after
    ``deadline_s`` (a collective one rank never joins) are killed and the test fails."""
    import time

    out = tmp_path / "out"
    out.mkdir()
    context = mp.start_processes(
        in_process_group,
        args=(body, 2, f"file://{tmp_path / 'rendezvous'}", str(out)),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    end = time.monotonic() + deadline_s
    while not context.join(timeout=2):
        if time.monotonic() > end:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the ranks did not finish within {deadline_s:.0f} s (a deadlock)")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def worker(rank: int, world: int) -> dict:
    pool, size = distributed_pool()
    assert size == world
    inputs = rank_inputs(rank)
    options = options_under_test()
    adv = advantages(
        token_rewards(inputs["teacher"], inputs["old"], inputs["mask"]), inputs["mask"], options, pool
    )
    theta = torch.zeros(V, dtype=torch.float64, requires_grad=True)
    model = torch.nn.parallel.DistributedDataParallel(_Bias(theta))
    share, logs = loss_and_grad(inputs, model(), options, pool)
    (share * size).backward()  # DDP averages over ranks: the share's gradient times the world size
    return {
        "adv": adv,
        "loss": pool.sum(share.detach()),
        "grad": model.module.theta.grad.clone(),
        "logs": logs,
    }


class _Bias(torch.nn.Module):
    def __init__(self, theta: torch.Tensor) -> None:
        super().__init__()
        self.theta = torch.nn.Parameter(theta.detach().clone())

    def forward(self) -> torch.Tensor:
        return self.theta


@pytest.mark.slow  # several processes: make test-slow (.ci/run runs it)
def test_two_ranks_compute_what_one_process_computes_on_their_union(tmp_path):
    ranks = spawn(worker, tmp_path)

    # one process with both ranks' rollouts, padded to the wider width
    parts = [rank_inputs(r) for r in range(2)]
    width = max(WIDTHS)
    union = {k: torch.cat([pad_to(p[k], width) for p in parts]) for k in parts[0]}
    options = options_under_test()
    adv = advantages(token_rewards(union["teacher"], union["old"], union["mask"]), union["mask"], options)
    theta = torch.zeros(V, dtype=torch.float64, requires_grad=True)
    loss, logs = loss_and_grad(union, theta, options)
    loss.backward()

    for r in range(2):  # whitened advantages: each rank's rows of the union's
        torch.testing.assert_close(ranks[r]["adv"], adv[r * B : (r + 1) * B, : WIDTHS[r]])
        torch.testing.assert_close(ranks[r]["loss"], loss.detach())
        torch.testing.assert_close(ranks[r]["grad"], theta.grad)  # DDP-synchronised: the union's gradient
        for key in (
            "pg_loss",
            "single_step_loss",
            "clip_frac",
            "ratio_mean",
            "iw_mean",
            "iw_max",
            "reward_mean",
        ):
            torch.testing.assert_close(ranks[r]["logs"][key], logs[key], msg=key)
    # the check can fail: whitening on one rank alone differs from the union's
    alone = advantages(
        token_rewards(parts[0]["teacher"], parts[0]["old"], parts[0]["mask"]), parts[0]["mask"], options
    )
    assert not torch.allclose(alone, adv[:B, : WIDTHS[0]])
    assert float(theta.grad.abs().max()) > 0


def test_one_process_has_the_local_pool():
    from minillm.objectives.policy_gradient import LOCAL

    assert not dist.is_initialized()
    assert distributed_pool() == (LOCAL, 1)
    assert os.environ.get("WORLD_SIZE") in (None, "1")


# --------------------------------------------------------------------------- one MiniLLM update under DDP

ARCH = dict(
    model_type="llama", hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
)
RVOCAB, REOS, ROWS = 40, 0, 4  # ROWS rollouts in all, ROWS // 2 per rank


def shared_rollout():
    """The same models and rollouts in every process (fixed seeds): 4 prompts of different lengths."""
    from minillm.models.tiny import build_model
    from minillm.rollout.options import SamplingOptions
    from minillm.rollout.sampler import sample_rollouts

    student = build_model(ARCH, RVOCAB, eos_token_id=REOS, seed=1)
    teacher = build_model(ARCH, RVOCAB, eos_token_id=REOS, seed=2).eval()
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(1, RVOCAB, (ROWS, 6), generator=gen)
    mask = torch.ones_like(ids)
    for row, n in enumerate((6, 2, 4, 3)):  # left padding
        mask[row, : 6 - n] = 0
        ids[row, : 6 - n] = REOS
    sampling = SamplingOptions(max_new_tokens=5, teacher_mix_alpha=0.3, eos_token_id=REOS, pad_token_id=REOS)
    rollout = sample_rollouts(
        student.eval(), teacher, ids, mask, sampling, generator=torch.Generator().manual_seed(3),
        keep_teacher_logits=True,
    )  # fmt: skip
    return student, teacher, rollout


def one_update(student, teacher, rollout, pool=None, world=1):
    """One ``MiniLLMRound.update`` with plain SGD (AdamW would hide a wrongly scaled gradient)."""
    from minillm.rollout.options import SamplingOptions
    from minillm.training.options import RoundOptions
    from minillm.training.round import MiniLLMRound

    optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    sampling = SamplingOptions(max_new_tokens=5, eos_token_id=REOS, pad_token_id=0)
    options = RoundOptions(mini_batch_size=ROWS, ppo_epochs=1, sampling=sampling, grad_clip=None)
    kwargs = {} if pool is None else {"pool": pool, "world_size": world}
    runner = MiniLLMRound(student, teacher, optimizer, scheduler, options, **kwargs)
    return runner.update(rollout)


def update_worker(rank: int, world: int) -> dict:
    student, teacher, rollout = shared_rollout()
    half = ROWS // world
    mine = rollout.select(list(range(rank * half, (rank + 1) * half)))
    model = torch.nn.parallel.DistributedDataParallel(student)
    pool, size = distributed_pool()
    logs = one_update(model, teacher, mine, pool, size)
    return {"state": {k: v.clone() for k, v in student.state_dict().items()}, "logs": logs}


@pytest.mark.slow  # several processes: make test-slow (.ci/run runs it)
def test_a_minillm_update_under_ddp_equals_one_process_on_the_union(tmp_path):
    ranks = spawn(update_worker, tmp_path)
    student, teacher, rollout = shared_rollout()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    logs = one_update(student, teacher, rollout)
    after = student.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in after)  # the update did move the weights
    for r in range(2):
        got = ranks[r]
        for key, value in after.items():
            torch.testing.assert_close(got["state"][key], value, rtol=1e-5, atol=1e-6, msg=key)
        for key in ("loss", "pg_loss", "single_step_loss", "grad_norm", "reward_mean", "iw_max"):
            torch.testing.assert_close(got["logs"][key], logs[key], rtol=1e-5, atol=1e-6, msg=key)


# --------------------------------------------------------------------------- decoding with sharded weights

DECODE_STEPS = 6


def decode_inputs(rank: int):
    """Rank ``rank``'s prompts and the rule that shapes its sampling: rank 0 always says EOS (done after one
    step), rank 1 never does (all ``DECODE_STEPS`` steps)."""
    gen = torch.Generator().manual_seed(20 + rank)
    ids = torch.randint(1, RVOCAB, (2, 4), generator=gen)

    def rule(so_far, logits):
        banned = torch.full_like(logits, float("-inf"))
        if rank == 0:
            return banned.index_fill(-1, torch.tensor([REOS]), 0.0)
        return logits.index_fill(-1, torch.tensor([REOS]), float("-inf"))

    return ids, torch.ones_like(ids), rule


def decode(model, rank: int):
    from minillm.rollout.options import SamplingOptions
    from minillm.rollout.sampler import generate

    ids, mask, rule = decode_inputs(rank)
    sampling = SamplingOptions(max_new_tokens=DECODE_STEPS, eos_token_id=REOS, pad_token_id=REOS)
    rollout = generate(
        model, ids, mask, sampling, generator=torch.Generator().manual_seed(5 + rank), logits_processor=rule,
    )  # fmt: skip
    return {"ids": rollout.response_ids, "logprobs": rollout.student_logprobs}


def sharded_decode_worker(rank: int, world: int) -> dict:
    from torch.distributed.device_mesh import init_device_mesh

    from minillm.models.sharding import is_sharded, shard
    from minillm.models.tiny import build_model

    model = build_model(ARCH, RVOCAB, eos_token_id=REOS, seed=1).eval()
    shard(model, init_device_mesh("cpu", (world,)))
    assert is_sharded(model)
    with torch.no_grad():
        return decode(model, rank)


@pytest.mark.slow  # several processes: make test-slow (.ci/run runs it)
def test_ranks_decode_in_lockstep_with_sharded_weights_and_sample_what_one_process_samples(tmp_path):
    """FSDP2: every forward gathers the shards (a collective), so a rank whose rows all finished must keep
    stepping until every rank is done; each rank's samples are what the unsharded model samples."""
    from minillm.models.tiny import build_model

    ranks = spawn(sharded_decode_worker, tmp_path, deadline_s=240)
    model = build_model(ARCH, RVOCAB, eos_token_id=REOS, seed=1).eval()
    assert ranks[0]["ids"].shape[1] == 1 and ranks[1]["ids"].shape[1] == DECODE_STEPS  # the rules held
    for rank in range(2):
        with torch.no_grad():
            alone = decode(model, rank)
        assert torch.equal(ranks[rank]["ids"], alone["ids"])
        torch.testing.assert_close(ranks[rank]["logprobs"], alone["logprobs"], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- the data, sharded


@pytest.mark.parametrize("lengths", [None, [3, 9, 4, 7, 1, 8, 2, 6, 5, 9, 3, 4, 6, 2]])
def test_ranks_slice_the_batches_one_process_draws_at_the_global_size(lengths):
    """Rank r's batches are the r-th slices of the batches one process draws at batch_size × world; a
    global batch too small to give every rank a full slice is dropped."""
    from minillm.data.datasets import ResumableBatches

    n, per_rank, world = 14, 2, 3
    one = ResumableBatches(n, per_rank * world, seed=5, lengths=lengths)
    ranks = [
        ResumableBatches(n, per_rank, seed=5, lengths=lengths, rank=r, world_size=world) for r in range(world)
    ]
    for epoch in (0, 1):
        full = [b for b in one.batches(epoch) if len(b) == per_rank * world]
        assert len(full) == n // (per_rank * world) == len(ranks[0])
        for r, sampler in enumerate(ranks):
            assert sampler.batches(epoch) == [b[r * per_rank : (r + 1) * per_rank] for b in full]


@pytest.mark.slow
def test_minillm_runs_under_ddp_on_two_processes_and_only_rank_zero_writes(tmp_path):
    """`strategy=ddp trainer.devices=2` end to end (Lightning launches the second process): results.json
    and the table come from rank zero only; training saw both ranks' shards (global step as configured)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "MINILLM_CACHE": str(tmp_path / "cache"),
    }
    cmd = [sys.executable, "-m", "minillm.run", "debug=smoke", "objective=reverse_kld", "strategy=ddp",
           "trainer.devices=2", "logger=csv", f"hydra.run.dir={run_dir}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] == 3 and results["test/rougeL"] is not None
    assert done.stdout.count("\nresults: ") == 1  # one table and one results.json: rank one evaluates nothing


@pytest.mark.slow  # several processes: make test-slow (.ci/run runs it)
def test_minillm_under_fsdp_matches_ddp_and_keeps_the_teacher_out_of_the_checkpoint(tmp_path):
    """`strategy=fsdp` (FSDP2: student and teacher sharded over 2 processes) against `strategy=ddp`: the same
    logged losses within float tolerance; the checkpoint holds the student's full weights and no teacher."""
    import csv
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "MINILLM_CACHE": str(tmp_path / "cache"),
    }
    rows = {}
    for strategy in ("ddp", "fsdp"):
        run_dir = tmp_path / strategy
        cmd = [sys.executable, "-m", "minillm.run", "debug=smoke", "objective=reverse_kld", f"strategy={strategy}",
               "trainer.devices=2", "logger=csv", f"hydra.run.dir={run_dir}"]  # fmt: skip
        done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        rows[strategy] = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    keys = ("train/loss", "train/pg_loss", "train/single_step_loss", "train/grad_norm", "rollout/reward")
    assert len(rows["ddp"]) == len(rows["fsdp"])
    compared = 0
    for a, b in zip(rows["ddp"], rows["fsdp"], strict=True):
        for key in keys:
            if a.get(key):
                assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4, abs=1e-6), key
                compared += 1
    assert compared >= len(keys)
    ckpt = torch.load(tmp_path / "fsdp" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["state_dict"] and all(k.startswith("student.") for k in ckpt["state_dict"])
    assert all(type(v) is torch.Tensor for v in ckpt["state_dict"].values())  # gathered, not shards


# --------------------------------------------------------------------------- validation sharded over ranks


def validation_setup(folder: str):
    """The tokenizer saved in ``folder``, a tiny student (fixed seed) and 11 valid prompts with checkers:
    batches of 4, 4 and 3, so rank 0 samples batches 0 and 2 (7 prompts), rank 1 batch 1 (4)."""
    from omegaconf import OmegaConf

    from minillm.data.bundled import generate_records
    from minillm.data.datasets import tokenize_records
    from minillm.data.template import PromptTemplate
    from minillm.evaluation.callbacks import SampledValidation
    from minillm.models.loading import load_tokenizer
    from minillm.models.tiny import build_model

    tokenizer = load_tokenizer(folder)
    student = build_model(ARCH, len(tokenizer), eos_token_id=tokenizer.eos_token_id, seed=4).eval()
    records = generate_records(11, seed=3)
    examples = tokenize_records(
        records,
        tokenizer,
        PromptTemplate.from_name("short", tokenizer),
        max_prompt_len=256,
        max_response_len=64,
    )
    cfg = OmegaConf.create(
        {
            "select": {"monitor": "val/rougeL"},
            "eval": {"val_samples": 11, "batch_size": 4, "max_new_tokens": 12, "temperature": 1.0,
                     "top_k": 0, "top_p": 1.0},
        }
    )  # fmt: skip
    return SampledValidation(cfg, tokenizer, examples, records), student


def validation_worker(rank: int, world: int, folder: str) -> dict:
    import minillm.evaluation.sampled as sampled

    drawn = []
    sample = sampled.sample_responses

    def counting(model, tokenizer, examples, sampling, **kwargs):
        drawn.extend(e.index for e in examples)
        return sample(model, tokenizer, examples, sampling, **kwargs)

    sampled.sample_responses = counting
    callback, student = validation_setup(folder)
    result = callback.metrics(student, rank, world)
    return {"result": result, "drawn": drawn}


VALIDATION_KEYS = ("rougeL", "exact_match", "valid_rate", "distinct4", "length", "rougeL_per_prompt",
                   "valid_per_prompt", "per_category", "by_length", "samples")  # fmt: skip


@pytest.mark.slow  # two spawned processes: about 20 s on a quiet machine, 70 s under load
def test_validation_under_ddp_samples_a_share_per_rank_and_equals_one_process(tmp_path, tiny_tokenizer):
    """SampledValidation with 2 ranks: each samples its own batches of the slice (none twice, none left
    out) and both end with the metrics one process computes on the whole slice."""
    from functools import partial

    folder = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(folder)
    ranks = spawn(partial(validation_worker, folder=str(folder)), tmp_path, deadline_s=240)
    callback, student = validation_setup(str(folder))
    alone = callback.metrics(student)
    assert alone["valid_rate"] is not None and len(alone["rougeL_per_prompt"]) == 11
    assert sorted(ranks[0]["drawn"] + ranks[1]["drawn"]) == list(range(11))
    assert ranks[0]["drawn"] == [0, 1, 2, 3, 8, 9, 10] and ranks[1]["drawn"] == [4, 5, 6, 7]
    for got in ranks:
        for key in VALIDATION_KEYS:
            assert got["result"][key] == alone[key], key


def test_validation_is_sharded_over_ddp_ranks_only(monkeypatch):
    """DDP's ranks share the validation prompts; FSDP decodes in lockstep on every rank (each samples all of
    them, as one process does); one process is rank 0 of 1."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

    from minillm.evaluation.callbacks import _data_parallel_ranks

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    ddp = SimpleNamespace(world_size=2, global_rank=1, strategy=DDPStrategy())
    assert _data_parallel_ranks(ddp) == (1, 2)
    fsdp = SimpleNamespace(world_size=2, global_rank=1, strategy=ModelParallelStrategy())
    assert _data_parallel_ranks(fsdp) == (0, 1)
    assert _data_parallel_ranks(SimpleNamespace(world_size=1, global_rank=0, strategy=DDPStrategy())) == (
        0,
        1,
    )
