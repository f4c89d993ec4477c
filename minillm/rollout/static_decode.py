"""Static-cache decoding for the lockstep sampler and ``generate`` (``sampler.decode``, issue 22).

``minillm.rollout.sampler`` decodes token by token; each step is one forward of a small model, so at the
embedded pair's size the step is mostly per-call overhead (Python, dispatcher, a growing ``DynamicCache``
concatenating every layer's keys and values). This module gives each decoding model a KV cache allocated
once (transformers' ``StaticCache``) and, with ``sampler.decode=compiled``, one ``torch.compile``'d
per-token step over it:

- ``eager`` (default): the sampler's own path, a ``DynamicCache`` per decoding.
- ``static``: a ``StaticCache`` reused across decodings, steps run eagerly.
- ``compiled``: the same cache, the per-token step compiled (CPU: inductor; CUDA: ``mode="reduce-overhead"``,
  CUDA graphs). The prompt's pass (prefill) stays eager: its length changes every batch.

Shapes are bucketed so that a new batch or prompt length does not compile again: the batch is padded to
the next power of two (extra rows repeat row 0 and are dropped from the logits, so they never touch the
sampler's generator) and the cache length to 64·2^k ≥ prompt + new tokens. One cache per (model, bucket,
dtype) is kept for the process and reset at the start of every decoding; each model compiles one step per
key (a bucket, and the state the graph depends on: autocast, grad mode, train/eval, the weights' dtype, the
model's forward hooks), once, the first time it is seen. Compile time is logged; where compiling fails the
model's steps run eagerly on the same cache, said in one logged line.

Guards: Dynamo checks a compiled graph's guards before every call, 150–230 µs per call for these models on the
2-core CPU (torch.profiler: a sixth of the lockstep rollout). Each key's step is a code object of its own
holding one graph, and after its first call (guards checked) it runs under ``torch.compiler.set_stance(
skip_guard_eval_unsafe=True)``, which skips the guards of a single graph but its tensors' (shapes, dtypes,
devices, requires_grad). The key holds the rest of what changes between decodings here (autocast, grad and
inference mode, train/eval, the weights' dtype, the model's forward hooks), so a changed state takes a step of
its own; where a tensor guard would still fail, Dynamo refuses and that key keeps its guards from then on
(logged). ``GUARD_SKIP = False`` turns this off; on CUDA the guards are kept (untested: no GPU here). Models it
is not safe for keep their guards: a peft (LoRA) model, a model with a forward hook on it or on any of its
modules (a hook's Python side effects are replayed as traced, not run), and a cache with other layers than
transformers' plain ``StaticLayer`` (a sliding-window layer keeps a Python int the graph bakes in). A change the
key does not see (a hook added to a submodule, a layer swapped, a non-tensor ``model.config`` field) after a
step is warm is not noticed: decode such a model with ``sampler.decode=static``.

Cache layout: slot ``j`` holds the ``j``-th column of the sampler's attention mask (prompt columns first,
then one per generated token). The mask passed to the model covers the whole cache (zeros past the
columns written so far), and the query's slot comes from the cache's own counter, so position ids (from
the mask, as in the eager path) and slots are independent: left padding works as in the eager path.
"""

from __future__ import annotations

import contextlib
import logging
import time
import types
import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.modules import module as module_hooks

from minillm.errors import MinillmError

log = logging.getLogger(__name__)

MODES = ("eager", "static", "compiled")
LENGTH_BUCKET = 64  # the smallest cache length; longer ones double
# Compiled graphs per code object before dynamo gives up and runs eagerly (torch's default is 8): every
# model and bucket is one entry of the same step function.
RECOMPILE_LIMIT = 64
BACKEND = "inductor"  # torch.compile's backend ("eager" in tests: tracing without code generation)
# After a step key's first call, its compiled step runs without Dynamo's guard checks (set_stance's
# skip_guard_eval_unsafe): the key (Slot.key) holds what those guards would check that can change here.
GUARD_SKIP = True
# Under bf16/fp16 autocast, decoding runs a copy of the model with its linear weights in that dtype (_shadow).
SHADOW = True

_mode = "eager"


def mode() -> str:
    """The process's decoding path: ``eager``, ``static`` or ``compiled``."""
    return _mode


def set_mode(name: str, *, key: str = "sampler.decode") -> None:
    """Select the decoding path for the process (``key`` names the setting in the error)."""
    global _mode
    if name not in MODES:
        raise MinillmError(f"{key}={name!r}: must be one of {', '.join(MODES)}")
    _mode = name


def check(cfg) -> str:
    """``cfg.sampler.decode`` (absent or null: eager), refused in one line when it names no path."""
    node = cfg.get("sampler")
    name = node.get("decode") if node is not None else None
    name = "eager" if name is None else name
    if name not in MODES:
        raise MinillmError(f"sampler.decode={name!r}: must be one of {', '.join(MODES)}")
    return name


def configure(cfg) -> str:
    """Set the decoding path from ``cfg.sampler.decode``; returns it."""
    set_mode(check(cfg))
    return _mode


@contextlib.contextmanager
def decode_mode(name: str):
    """Temporarily decode with ``name`` (benchmarks and tests)."""
    old = _mode
    set_mode(name)
    try:
        yield
    finally:
        set_mode(old)


def batch_bucket(batch: int) -> int:
    """The padded batch: the next power of two ≥ ``batch``."""
    return 1 << max(0, batch - 1).bit_length()


def length_bucket(length: int, smallest: int = LENGTH_BUCKET) -> int:
    """The cache length: the smallest ``smallest``·2^k ≥ ``length`` (``smallest``: ``LENGTH_BUCKET``)."""
    size = smallest
    while size < length:
        size *= 2
    return size


def own_code(fn, name: str):
    """``fn`` with a code object of its own, named ``name``: Dynamo keeps compiled graphs per code object, so
    each such copy keeps its graphs apart from every other copy's."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, name, fn.__defaults__, fn.__closure__)


@dataclass
class _ModelState:
    """What one model keeps for the process: its caches per bucket, its compiled step, its counts."""

    caches: dict = field(default_factory=dict)  # (batch, length, dtype, device) -> StaticCache
    compiled: dict = field(default_factory=dict)  # step key (Slot.key) -> its torch.compile'd step
    warm: set = field(default_factory=set)  # step keys whose compiled step ran once with Dynamo's guards
    guarded: set = field(default_factory=set)  # step keys that keep their guards (a skip was refused once)
    unguarded_calls: int = 0  # compiled calls that ran without Dynamo's guard checks (GUARD_SKIP)
    failed: str | None = None  # why compiled steps fell back to eager, once logged
    unsupported: str | None = None  # why the static cache itself failed (the eager path decodes), once logged
    compilations: int = 0  # graphs compiled for this model (one per bucket seen)
    compile_seconds: float = 0.0
    shadow: nn.Module | None = None  # the copy with low-precision linear weights (_shadow), once made
    shadow_dtype: torch.dtype | None = None
    shadow_version: tuple | None = (
        None  # (data pointer, version, shape) of each tensor it was last synced from
    )


_states: weakref.WeakKeyDictionary[nn.Module, _ModelState] = weakref.WeakKeyDictionary()


def states(model: nn.Module) -> list[_ModelState]:
    """What ``model``'s decoding keeps for the process: its own state and its low-precision copy's, if any."""
    state = _states.get(model)
    if state is None:
        return []
    shadow = _states.get(state.shadow) if state.shadow is not None else None
    return [state] if shadow is None else [state, shadow]


def compilations(model: nn.Module) -> int:
    """How many step graphs were compiled for ``model`` (and its low-precision copy) in this process."""
    return sum(state.compilations for state in states(model))


def decoder(model: nn.Module, device: torch.device) -> nn.Module:
    """The module that decodes for ``model`` (the Hugging Face model itself, not a wrapper) on ``device``: under
    bf16/fp16 autocast on CPU its copy with low-precision linear weights (:func:`_shadow`), else ``model``.
    Every decoding path calls it (``SHADOW = False``: always ``model``). The copy costs memory: the model's
    linear weights at half size plus its other parameters (embeddings, norms) at full size."""
    if not SHADOW or device.type != "cpu" or not torch.is_autocast_enabled(device.type):
        return model  # CUDA: untested here (no GPU), and the copy's memory matters more there
    if getattr(model, "config", None) is None:
        return model
    shadow = _shadow(model, _states.setdefault(model, _ModelState()), device)
    return model if shadow is None else shadow


def _shadow(model: nn.Module, state: _ModelState, device: torch.device) -> nn.Module | None:
    """Under bf16/fp16 autocast, a copy of ``model`` whose ``nn.Linear`` weights and biases are held in the
    autocast dtype (everything else as in ``model``), synced from ``model`` whenever a parameter or buffer
    changed since the last decoding (an in-place update bumps its version; a resize makes a new copy); None
    where autocast is off, the weights are not fp32, or the model is a peft or hooked one (its adapters and
    hooks are its own). Not seen: writes through ``.data`` (they bump no version) and config changes made after
    the copy (``set_attn_implementation``); decode such a model with ``static_decode.SHADOW = False``.

    Why: autocast casts a linear layer's fp32 weight to bf16 on every call. Its cache of those casts lasts one
    autocast region and Lightning's precision plugin turns it off (a training step changes the weights inside
    its region); a compiled graph cannot keep it either. So every decoded token cast every weight again (2.4×
    the SmolLM2 student's compiled decoding time). The copy computes exactly what autocast computes on ``model``:
    autocast casts the input of such a layer to the same dtype, and its weight is the same rounding of the fp32
    one; layers autocast leaves in fp32 (norms, embeddings) keep their fp32 parameters."""
    if not torch.is_autocast_enabled(device.type):
        return None
    dtype = torch.get_autocast_dtype(device.type)
    first = next(model.parameters(), None)
    if first is None or first.dtype != torch.float32 or hasattr(model, "peft_config") or _hooked(model):
        return None
    tensors = [*model.parameters(), *model.buffers()]
    version = tuple((t.data_ptr(), t._version, tuple(t.shape)) for t in tensors)
    # outside inference mode: a copy made or synced under it (Lightning's validation) would hold inference
    # tensors that a later sync outside it may not update in place
    with torch.inference_mode(False), torch.no_grad():
        stale_shapes = state.shadow_version is not None and [v[2] for v in version] != [
            v[2] for v in state.shadow_version
        ]
        if state.shadow is None or state.shadow_dtype != dtype or stale_shapes:  # made, or remade (resized)
            state.shadow, state.shadow_dtype, state.shadow_version = (
                _low_precision_copy(model, dtype),
                dtype,
                None,
            )
        # an update since the last decoding (optimizer steps work in place)
        if version != state.shadow_version:
            for mine, theirs in zip(state.shadow.modules(), model.modules(), strict=True):
                for name, tensor in [
                    *theirs.named_parameters(recurse=False),
                    *theirs.named_buffers(recurse=False),
                ]:
                    getattr(mine, name).copy_(tensor)
            state.shadow_version = version
    for mine, theirs in zip(state.shadow.modules(), model.modules(), strict=True):
        mine.training = theirs.training
    return state.shadow


def _low_precision_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model`` copied, its ``nn.Linear`` layers' parameters in ``dtype`` (a tied output layer untied from
    its fp32 embedding), nothing requiring grad."""
    import copy

    shadow = copy.deepcopy(model)
    for module in shadow.modules():
        if type(module) is nn.Linear:  # exactly: a subclass may use its parameters outside F.linear
            for name, param in list(module.named_parameters(recurse=False)):
                setattr(module, name, nn.Parameter(param.detach().to(dtype), requires_grad=False))
    for param in shadow.parameters():
        param.requires_grad_(False)
    return shadow


def _hooked(model: nn.Module) -> bool:
    """A forward hook on ``model``, on any of its modules or on every module."""
    if module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def slot(model: nn.Module, batch: int, prompt_len: int, max_new_tokens: int, device: torch.device):
    """A reset cache for one decoding of ``batch`` rows by ``model`` (the Hugging Face model itself, not
    a wrapper), or None where the eager path decodes (``sampler.decode=eager``, or a model without a
    ``config``)."""
    if _mode == "eager" or getattr(model, "config", None) is None:
        return None
    model = decoder(model, device)  # under autocast: the copy with the low-precision weights
    state = _states.setdefault(model, _ModelState())
    if state.unsupported is not None:
        return None
    padded, length = batch_bucket(batch), length_bucket(prompt_len + max_new_tokens)
    dtype = _cache_dtype(model, device)
    # inference mode too: a cache first filled under torch.inference_mode (Lightning's validation) holds inference
    # tensors, which a later decoding outside it may not update in place
    key = (padded, length, dtype, str(device), torch.is_inference_mode_enabled())
    cache = state.caches.get(key)
    if cache is None:
        # allocated by the first (prompt) pass, in the dtype and head layout the model gives its keys
        cache = _new_cache(model, length)
        state.caches[key] = cache
    cache.reset()  # a fresh decoding: counters at 0, no keys or values of the last one
    return Slot(model, state, cache, batch, padded, length, device, compiled=_mode == "compiled")


class Slot:
    """One decoding's view of a model's static cache: pads the batch and the mask to the bucket, runs the
    prompt's pass eagerly and every later step compiled (or eagerly)."""

    def __init__(
        self,
        model: nn.Module,
        state: _ModelState,
        cache,
        batch: int,
        padded: int,
        length: int,
        device: torch.device,
        *,
        compiled: bool,
    ):
        self.model, self.state, self.cache = model, state, cache
        self.batch, self.length = batch, length
        # Padding rows repeat row 0: real inputs, so no row attends to nothing.
        self.rows = torch.cat(
            [torch.arange(batch, device=device), torch.zeros(padded - batch, dtype=torch.long, device=device)]
        )
        self.mask = torch.zeros(padded, length, dtype=torch.long, device=device)
        self.compiled = compiled
        # one compiled step per key, each its own code object with one graph: what its guards would check that
        # may change between decodings (shapes and device, autocast, grad mode, train/eval, the weights' dtype,
        # the model's own forward hooks) is in the key, so that a call whose key ran before skips them
        self.key = (padded, length, str(device), *_context(model, device)) if compiled else None
        self.prefilled = False
        self.dynamic = None  # a DynamicCache once the static one failed on this model

    def step(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        """Logits (B, V) of the last position. ``input_ids`` (B, q): the prompt (first call) or the new
        token; ``attention_mask`` (B, n): every column so far, this call's included (n ≤ cache length);
        ``position_ids`` (B, q)."""
        if self.dynamic is not None:  # the model cannot decode over a static cache: the eager path's cache
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=self.dynamic,
                use_cache=True,
                logits_to_keep=1,
            )
            self.dynamic = out.cache
            return out.logits[:, -1, :]
        n = attention_mask.shape[1]
        if n > self.length:
            raise RuntimeError(f"static cache of {self.length} slots cannot hold {n} columns")
        self.mask[:, :n] = attention_mask[self.rows]
        ids, pos = input_ids[self.rows], position_ids[self.rows]
        if not self.prefilled:  # the prompt: eager (its length changes every batch)
            self.prefilled = True
            try:
                logits = _forward(self.model, ids, self.mask, pos, self.cache)
            except Exception as err:  # e.g. an architecture without static-cache support: eager, said once
                self.state.unsupported = one_line(err)
                log.warning(
                    "sampler.decode=%s: %s cannot decode over a static cache (%s); it decodes eagerly",
                    "compiled" if self.compiled else "static",
                    type(self.model).__name__,
                    self.state.unsupported,
                )
                from transformers import DynamicCache

                self.dynamic = DynamicCache(config=self.model.config)
                return self.step(input_ids, attention_mask, position_ids)
        elif self.compiled and self.state.failed is None:
            logits = self._compiled_step(ids, pos)
        else:
            logits = _forward(self.model, ids, self.mask, pos, self.cache)
        return logits[: self.batch]

    def _call(self, compiled, ids: Tensor, pos: Tensor, unguarded: bool) -> Tensor:
        """One call of a compiled step, without Dynamo's guard evaluation where ``unguarded``. Where a guard the
        key does not cover would have failed (Dynamo refuses to recompile under the skipping stance), the key keeps
        its guards from then on and the call runs again with them (nothing ran: the refusal comes before the
        graph)."""
        if not unguarded:
            return compiled(ids, self.mask, pos, self.cache)
        try:
            with _unguarded():
                return compiled(ids, self.mask, pos, self.cache)
        except Exception as err:
            if "skip_guard_eval_unsafe" not in str(err):
                raise
        self.state.warm.discard(self.key)
        self.state.guarded.add(self.key)
        log.info(
            "sampler.decode=compiled: %s's decoding step for batch %d, cache %d keeps its guards (state the step's "
            "key does not cover changed)",
            type(self.model).__name__,
            self.rows.shape[0],
            self.length,
        )
        return compiled(ids, self.mask, pos, self.cache)

    def _compiled_step(self, ids: Tensor, pos: Tensor) -> Tensor:
        state, key = self.state, self.key
        compiled = state.compiled.get(key)
        if compiled is None:
            compiled = state.compiled[key] = _compile(self.model)
        unguarded = GUARD_SKIP and key in state.warm
        graphs = unique_graphs()
        start = time.perf_counter()
        on_cuda = ids.device.type == "cuda"
        try:
            if on_cuda:  # CUDA graphs: each call is a new replay of the recorded graph
                torch.compiler.cudagraph_mark_step_begin()
            logits = self._call(compiled, ids, pos, unguarded)
            # the graph's output buffer is overwritten by the next replay, and the sampler may keep it
            if on_cuda:
                logits = logits.clone()
        except Exception as err:  # any compiler failure: decode eagerly, said once
            state.failed = one_line(err)
            log.warning(
                "sampler.decode=compiled: compiling %s's decoding step failed (%s); its steps run eagerly",
                type(self.model).__name__,
                state.failed,
            )
            return _forward(self.model, ids, self.mask, pos, self.cache)
        if key in state.warm:
            state.unguarded_calls += 1
        elif GUARD_SKIP and not on_cuda and key not in state.guarded and _trusted(self.model, self.cache):
            state.warm.add(key)  # CUDA graphs: untested here, guards kept
        new = unique_graphs() - graphs
        if new > 0:
            seconds = time.perf_counter() - start
            state.compilations += new
            state.compile_seconds += seconds
            log.info(
                "sampler.decode=compiled: compiled %s's decoding step for batch %d, cache %d in %.1f s",
                type(self.model).__name__,
                self.rows.shape[0],
                self.length,
                seconds,
            )
        return logits


def _context(model: nn.Module, device: torch.device) -> tuple:
    """What a compiled step depends on beyond its shapes that can change between decodings in a process."""
    autocast = torch.is_autocast_enabled(device.type)
    return (
        autocast,
        torch.get_autocast_dtype(device.type) if autocast else None,
        torch.is_grad_enabled(),
        torch.is_inference_mode_enabled(),
        model.training,
        next(model.parameters()).dtype,
        tuple(model._forward_pre_hooks),
        tuple(model._forward_hooks),
        tuple(module_hooks._global_forward_pre_hooks),
        tuple(module_hooks._global_forward_hooks),
    )


def _trusted(model: nn.Module, cache) -> bool:
    """Whether ``model``'s compiled steps over ``cache`` may skip Dynamo's guards once warm: not a peft (LoRA)
    model, whose adapters can be merged, swapped or switched off between calls; no forward hook on it, on any of
    its modules or on every module (a hook's Python side effects are replayed as traced, not run); and a cache of
    plain ``StaticLayer``s only, whose state between calls is tensors (a sliding-window layer keeps a Python int
    that the graph would bake in)."""
    from transformers.cache_utils import StaticLayer

    if hasattr(model, "peft_config"):
        return False
    if any(type(layer) is not StaticLayer for layer in getattr(cache, "layers", [None])):
        return False
    return not _hooked(model)


def _unguarded():
    """Run a warm compiled step without Dynamo's guard evaluation (its key has run before)."""
    return torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)


def one_line(err: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters), for a one-line log; a compiler's wrapper
    (Dynamo's ``BackendCompilerFailed``, whose first line only names the backend) gives the error it wraps."""
    inner = getattr(err, "inner_exception", None)
    if isinstance(inner, BaseException):
        return f"{type(err).__name__}: {one_line(inner)}"[:300]
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def _forward(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, cache
) -> Tensor:
    """One forward over the static cache; the last position's logits (B, V)."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return out.logits[:, -1, :]


def _compile(model: nn.Module):
    """A compiled step of ``model``: static shapes (one bucket), one graph (fullgraph), CUDA graphs on CUDA.
    Each call gives a function with a code object of its own, so that Dynamo keeps its graphs apart from every
    other step's (its cache is per code object)."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    on_cuda = next(model.parameters()).device.type == "cuda"
    # a weak reference: the step is kept in the model's own entry of the weakly keyed _states, and a strong one
    # from there would keep the model (its caches and graphs) alive for the rest of the process
    model_ref = weakref.ref(model)

    def shared(input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, cache) -> Tensor:
        return _forward(model_ref(), input_ids, attention_mask, position_ids, cache)

    step = own_code(shared, "decode_step")

    if BACKEND != "inductor":  # tests: dynamo's tracing and guards without inductor's code generation
        return torch.compile(step, fullgraph=True, dynamic=False, backend=BACKEND)
    return torch.compile(step, fullgraph=True, dynamic=False, mode="reduce-overhead" if on_cuda else None)


def unique_graphs() -> int:
    """Graphs dynamo has compiled in this process (its own counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _cache_dtype(model: nn.Module, device: torch.device) -> torch.dtype:
    """The dtype the model's keys and values take: autocast's where it is on, else the weights'."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return next(model.parameters()).dtype


def _new_cache(model: nn.Module, length: int):
    """A ``StaticCache`` of ``length`` slots for ``model`` (allocated by its first update)."""
    from transformers import StaticCache

    return StaticCache(config=model.config, max_cache_len=length)
