"""Memory of the full-vocabulary single-step term, in one pass and chunked over the sequence."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time

import torch
from omegaconf import DictConfig

from minillm.bench.measure import peak_memory
from minillm.bench.settings import Runtime
from minillm.errors import MinillmError
from minillm.objectives.policy_gradient import single_step_loss


def vocab_memory_rows(spec: dict) -> dict:
    """The measurement behind :func:`vocab_memory`, in this process: for each chunk size (then one pass),
    two repeats of the single-step term's forward + backward; the second repeat's memory is reported
    (the first carries one-time allocations)."""
    runtime = Runtime(device=torch.device(spec["device"]), dtype="fp32", compile=False)
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    shape = tuple(spec["shape"])
    gen = torch.Generator().manual_seed(int(spec["seed"]))
    teacher = torch.randn(shape, generator=gen).to(runtime.device)
    student = torch.randn(shape, generator=gen).to(runtime.device).requires_grad_()
    mask = torch.ones(shape[:2], device=runtime.device)
    rows, values = [], {}
    for chunk in (*sorted(spec["chunk_sizes"]), None):
        for _ in range(2):
            student.grad = None
            gc.collect()
            with peak_memory(runtime) as memory:
                started = time.perf_counter()
                loss = single_step_loss(student, teacher, mask, reduction="mean", chunk_size=chunk)
                loss.backward()
                runtime.sync()
                seconds = time.perf_counter() - started
        values[chunk] = (loss.item(), student.grad.clone())
        rows.append(
            {
                "chunk_size": chunk,
                "seconds": seconds,
                "peak_mib": memory["peak_mib"],
                "added_mib": memory["peak_mib"] - memory["start_mib"],
                "kind": memory["kind"],
            }
        )
    plain_loss, plain_grad = values[None]
    max_diff = max(
        max(abs(loss - plain_loss), (grad - plain_grad).abs().max().item()) for loss, grad in values.values()
    )
    return {
        "shape": list(shape),
        "logits_mib": student.numel() * student.element_size() / 2**20,
        "rows": rows,
        "max_abs_diff_vs_one_pass": max_diff,
    }


def vocab_memory(runtime: Runtime, cfg: DictConfig) -> dict | None:
    """Peak memory of the single-step term (token reverse KL over the full vocabulary, forward and
    backward) on random logits of ``vocab_memory.*`` size, in one pass and chunked over the sequence.

    The student's and teacher's logits are allocated before the measured block: what is compared is the
    memory the loss and its backward add on top of them (the student's gradient, one logits tensor,
    included). On CPU it runs in a child process with ``MALLOC_MMAP_THRESHOLD_=65536``, so every large
    tensor is its own mapping, returned on free, and the resident-set high-water mark follows the live
    tensors (with glibc's default, freed pages stay resident and the figures depend on what ran before)."""
    vm = cfg.get("vocab_memory")
    if not vm or not vm.get("enabled", True):
        return None
    spec = {
        "device": str(runtime.device),
        "shape": [int(vm.batch_size), int(vm.response_len), int(vm.vocab_size)],
        "chunk_sizes": [int(c) for c in vm.chunk_sizes],
        "seed": int(cfg.seed),
        "threads": torch.get_num_threads(),
    }
    if runtime.device.type == "cuda":
        return vocab_memory_rows(spec)
    code = (
        "import json, sys; from minillm.bench.vocab_memory import vocab_memory_rows as f; "
        "print(json.dumps(f(json.loads(sys.argv[1]))))"
    )
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise MinillmError(
            f"vocab_memory: the measuring process failed ({last}); vocab_memory.enabled=false skips it"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])
