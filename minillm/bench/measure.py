"""Measuring: wall time per named region, forward tokens per model, peak memory."""

from __future__ import annotations

import contextlib
import re
import resource
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch

from minillm.bench.settings import Runtime

LOAD_WARNING = 1.5  # 1-minute load average above which timings are flagged as taken under load


class Clock:
    """Accumulates wall time per named region (device-synchronised at both ends)."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.runtime.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.runtime.sync()
            self.seconds[name] += time.perf_counter() - start


@contextlib.contextmanager
def count_tokens(models: dict[str, torch.nn.Module]) -> Iterator[dict[str, int]]:
    """Tokens fed to each model's forward (``input_ids.numel()`` per call), via forward hooks."""
    counts = dict.fromkeys(models, 0)
    handles = []
    for name, model in models.items():

        def hook(module, args, kwargs, output, name=name):
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is not None:
                counts[name] += ids.numel()

        handles.append(model.register_forward_hook(hook, with_kwargs=True))
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


def _rss_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


@contextlib.contextmanager
def peak_memory(runtime: Runtime) -> Iterator[dict]:
    """Peak memory over the block, in MiB. CUDA: max_memory_allocated. CPU: the resident-set
    high-water mark (VmHWM, reset through /proc/self/clear_refs; where that is impossible, the
    process-lifetime ``ru_maxrss``)."""
    out: dict = {}
    if runtime.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runtime.device)
        start = torch.cuda.memory_allocated(runtime.device)
        yield out
        out.update(
            kind="cuda max_memory_allocated",
            peak_mib=torch.cuda.max_memory_allocated(runtime.device) / 2**20,
            start_mib=start / 2**20,
        )
        return
    reset = False
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        reset = True
    start = _rss_kib("VmRSS")
    yield out
    hwm = _rss_kib("VmHWM") if reset else None
    if hwm is not None:
        out.update(kind="cpu resident set (VmHWM)", peak_mib=hwm / 1024, start_mib=(start or 0) / 1024)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out.update(kind="cpu ru_maxrss (process lifetime)", peak_mib=peak, start_mib=(start or 0) / 1024)
