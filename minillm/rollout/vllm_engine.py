"""``sampler=vllm``: one model's samples drawn by vLLM, in a process of its own (``vllm_server.py``).

vLLM pins another transformers than the project, so the engine runs with its own Python (``make install-vllm``
builds ``.venv-vllm``; ``sampler.python`` names it). One engine process per model shape (the student's, the
teacher's) is started on first use and reused for the whole process; each engine gets the model's current
weights, through a safetensors file in shared memory, before every sampling that follows a change of them (an
optimizer step or a loaded checkpoint bumps the parameters' version counters, which is what is compared).

Only the tokens come from the engine. The log-probs a loss reads stay the trainer's: ``generate`` runs one
no-grad pass of the model over what was sampled, so the PPO ratio of a round's first inner step is exactly 1
as with our own decoder; the engine's own log-prob of each sampled token is kept as a check
(``last_engine_logprobs``). A seed gives the same samples: each row's engine seed is drawn from the caller's
torch generator, whose state resumes with the run.

The dispatch: ``configure(cfg)`` at the start of a run, evaluation or diagnosis sets (or clears) the process's
engine; ``current()`` is what the samplers ask (None: our own decoder).
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from minillm.errors import MinillmError
from minillm.rollout import static_decode
from minillm.rollout.options import SamplingOptions

log = logging.getLogger(__name__)

SERVER = Path(__file__).with_name("vllm_server.py")
INSTALL_HINT = "install the engine with `make install-vllm`, or use sampler=hf"
# The CPU build's attention kernels (vllm.v1.attention.backends.cpu_attn) take these head sizes only.
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
# Architectures sampled and checked against the trainer here (tests/test_vllm.py); others are refused
# rather than trusted: the weight push relies on the engine reading the Hugging Face names.
ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")
# On CUDA the engine shares the GPU with the trainer: the share of the GPU's memory it takes (weights, activations
# and KV cache: vLLM's gpu_memory_utilization, whose own default of 0.9 would leave the trainer almost nothing).
GPU_MEMORY_UTILIZATION = 0.3
# The trainer's launcher variables: the engine is a world of one process of its own (vLLM reads LOCAL_RANK and
# the env:// ones where present)
_LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK",
                       "MASTER_ADDR", "MASTER_PORT")  # fmt: skip

# config.json keys that name or date a model rather than shape it
_NOT_SHAPE = (
    "_name_or_path",
    "_model_name_or_path",
    "dtype",
    "torch_dtype",
    "architectures",
    "transformers_version",
)

_ACTIVE: VllmSampler | None = None


def current() -> VllmSampler | None:
    """The process's engine when ``sampler=vllm`` was configured, else None (our own decoder)."""
    return _ACTIVE


def configure(cfg) -> VllmSampler | None:
    """Set the process's sampler from ``cfg.sampler`` (after ``check_sampler``, and after the presets are
    converted: ``minillm.models.prepare``); returns it. Starts no engine: that happens on first use."""
    global _ACTIVE
    static_decode.configure(cfg)  # sampler.decode: how our own decoder steps (eager | static | compiled)
    node = cfg.get("sampler")
    name = None if node is None else node.get("name")
    if _ACTIVE is not None and (name != "vllm" or _ACTIVE.settings != _settings(node, cfg)):
        _ACTIVE.close()
        _ACTIVE = None
    if name == "vllm":
        check_models(cfg)  # again: a GGUF preset's folder exists now
        if _ACTIVE is None:
            _ACTIVE = VllmSampler(**_settings(node, cfg))
    return _ACTIVE


def ranks_per_machine(cfg) -> int:
    """Training processes on this machine: ``trainer.devices`` under a data-parallel strategy (ddp, fsdp),
    else 1. Every one of them starts its own engine."""
    trainer = cfg.get("trainer") or {}
    devices = trainer.get("devices")
    if not trainer.get("strategy") or isinstance(devices, bool) or not isinstance(devices, int):
        return 1
    return max(1, devices)


def engine_threads(threads: int | None, ranks: int) -> int:
    """The engine's CPU threads: ``sampler.threads``, or where null this process's share of the cores (all of
    them over the ranks on this machine), as Lightning shares them out to the ranks' trainers. A rank's trainer
    waits while its engine samples, so the two take turns on the same share."""
    if threads is not None:
        return threads
    return max(1, (os.cpu_count() or 1) // ranks)


def _settings(node, cfg=None) -> dict:
    threads = None if node.get("threads") is None else int(node.threads)
    return {
        "python": str(node.python),
        "kv_cache_gib": int(node.kv_cache_gib),
        "threads": threads if cfg is None else engine_threads(threads, ranks_per_machine(cfg)),
        "max_model_len": int(node.max_model_len),
        "gpu_memory_utilization": float(node.get("gpu_memory_utilization", GPU_MEMORY_UTILIZATION)),
    }


# ---------------------------------------------------------------- checks before any model loads
def engine_installed(python: str) -> bool:
    """Whether ``python`` exists and can find vllm (without importing it: that takes half a minute)."""
    if not Path(python).is_file():
        return False
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0


def available_memory_gib() -> float:
    """MemAvailable of /proc/meminfo, in GiB (inf where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def check_model_shape(key: str, config: dict) -> None:
    """Refuse a model the engine cannot sample here: its architecture, its head size on CPU, or its length."""
    archs = config.get("architectures") or [
        _ARCH_OF_TYPE.get(config.get("model_type"), config.get("model_type"))
    ]
    arch = archs[0]
    if arch not in ARCHITECTURES:
        raise MinillmError(
            f"{key}: sampler=vllm does not sample {arch} models (checked here: {', '.join(ARCHITECTURES)}); "
            "use sampler=hf"
        )
    heads = config.get("num_attention_heads")
    head_dim = config.get("head_dim") or (config.get("hidden_size", 0) // heads if heads else None)
    if head_dim is not None and head_dim not in CPU_HEAD_SIZES and not torch.cuda.is_available():
        raise MinillmError(
            f"{key}: head size {head_dim} (hidden_size / num_attention_heads); vLLM's CPU attention takes only "
            f"{list(CPU_HEAD_SIZES)}: use sampler=hf"
        )


_ARCH_OF_TYPE = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}


def kv_bytes_per_token(config: dict) -> int:
    """fp32 K and V of one token over every layer."""
    heads = config.get("num_attention_heads") or 1
    head_dim = config.get("head_dim") or config.get("hidden_size", 0) // heads
    kv_heads = config.get("num_key_value_heads") or heads
    return 2 * int(config.get("num_hidden_layers", 1)) * kv_heads * head_dim * 4


def check_kv_budget(key: str, config: dict, kv_cache_gib: int, max_model_len: int) -> None:
    """The KV cache must hold one whole sequence, and the machine the cache."""
    need = kv_bytes_per_token(config) * max_model_len / 2**30
    if need > kv_cache_gib:
        raise MinillmError(
            f"sampler.kv_cache_gib={kv_cache_gib}: one sequence of sampler.max_model_len={max_model_len} tokens of "
            f"{key} needs {need:.3g} GiB of KV cache; raise it or lower sampler.max_model_len"
        )


def check_sampler(cfg) -> None:
    """``sampler=vllm``'s settings, before any model loads: the engine installed, no teacher mixing, nothing
    the engine cannot do, a KV budget the machine holds, and the models it would sample (where their config is
    known yet: ``configure`` checks again once the presets are converted)."""
    static_decode.check(cfg)  # sampler.decode names a path
    node = cfg.get("sampler")
    if node is None or node.get("name") != "vllm":
        return
    if not engine_installed(str(node.python)):
        raise MinillmError(f"sampler=vllm: no vLLM engine at sampler.python={node.python}: {INSTALL_HINT}")
    training = cfg.get("evaluate") is None and cfg.get("diagnose") is None  # those two train nothing
    obj = (cfg.get("objective") or {}) if training else {}
    for key in ("teacher_mix_alpha", "alpha_end"):
        alpha = obj.get(key)
        if key == "alpha_end" and obj.get("alpha_schedule") in (None, "constant"):
            continue
        if alpha is not None and float(alpha) > 0:
            raise MinillmError(
                f"objective.{key}={alpha}: the engine samples from the student alone and cannot mix in the "
                "teacher; use sampler=hf for teacher-mixed rollouts (or objective.teacher_mix_alpha=0)"
            )
    ngram = (cfg.get("evaluate") or {}).get("no_repeat_ngram_size")
    if ngram:
        raise MinillmError(
            f"evaluate.no_repeat_ngram_size={ngram}: the engine has no such filter; use sampler=hf, or set it to 0"
        )
    if (cfg.get("student") or {}).get("lora", {}).get("r"):
        raise MinillmError(
            "student.lora.r: sampler=vllm pushes plain weights, not LoRA adapters; use sampler=hf"
        )
    share = node.get("gpu_memory_utilization", GPU_MEMORY_UTILIZATION)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
        raise MinillmError(
            f"sampler.gpu_memory_utilization={share!r}: the engine's share of the GPU's memory, in (0, 1) (the "
            "trainer uses the rest)"
        )
    for key in ("kv_cache_gib", "max_model_len"):  # whole GiB: vLLM reads VLLM_CPU_KVCACHE_SPACE as an int
        value = node.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise MinillmError(f"sampler.{key}={value!r}: must be a positive integer")
    free = available_memory_gib()
    if float(node.kv_cache_gib) > free:
        raise MinillmError(
            f"sampler.kv_cache_gib={node.kv_cache_gib}: more than this machine's available memory "
            f"({free:.1f} GiB); lower it"
        )
    check_models(cfg)


def check_models(cfg) -> None:
    """The student and teacher the engine may sample (``arch``, or a folder's config.json once it exists)."""
    node = cfg.sampler
    for key in ("student", "teacher"):
        spec = cfg.get(key)
        config = model_config(spec)
        if config is None:
            continue
        # a folder's model is named by its path (the embedded pair's head size 8 is refused here, on CPU)
        check_model_shape(key if spec.get("arch") else f"{key}.path={spec.path}", config)
        max_len = min(int(node.max_model_len), int(config.get("max_position_embeddings") or 10**9))
        check_kv_budget(key, config, int(node.kv_cache_gib), max_len)


def model_config(spec) -> dict | None:
    """A model's Hugging Face config as a dict: its ``arch`` node, or its folder's config.json (None when
    neither is known yet, e.g. a GGUF preset before its conversion)."""
    if spec is None:
        return None
    if spec.get("arch"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(spec.arch, resolve=True)
    path = spec.get("path")
    if path and (Path(str(path)) / "config.json").is_file():
        return json.loads((Path(str(path)) / "config.json").read_text())
    return None


# ---------------------------------------------------------------- the engine
class EngineProcess:
    """One ``vllm_server.py`` process on one model shape."""

    def __init__(
        self,
        python: str,
        folder: Path,
        *,
        kv_cache_gib: int,
        threads: int | None,
        max_len: int,
        gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION,
    ):
        env = dict(os.environ)
        env.update(
            VLLM_ENABLE_V1_MULTIPROCESSING="0",  # the engine in the server process itself: no third process
            VLLM_CPU_KVCACHE_SPACE=str(kv_cache_gib),
            OMP_NUM_THREADS=str(threads or os.cpu_count() or 1),  # else vLLM drops torch to one thread
            VLLM_CONFIGURE_LOGGING="1",
            PYTHONNOUSERSITE="1",
        )
        for name in ("PYTHONPATH", "VIRTUAL_ENV"):  # the engine's environment is its own
            env.pop(name, None)
        env = _world_of_its_own(env)
        self.log_path = folder.parent / f"{folder.name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [python, str(SERVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            text=True,
        )
        self.weights_key: tuple | None = None
        self.call(
            op="start",
            folder=str(folder),
            max_model_len=max_len,
            seed=0,
            gpu_memory_utilization=gpu_memory_utilization,
        )

    def call(self, **request) -> dict:
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            raise RuntimeError(f"the vLLM engine stopped ({request['op']}); its log: {self.log_path}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise MinillmError(f"sampler=vllm: the engine refused {request['op']}: {reply.get('error')}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call(op="stop")
                self.proc.wait(timeout=30)
            except (RuntimeError, MinillmError, subprocess.TimeoutExpired):
                self.proc.kill()
        self._log.close()


class VllmSampler:
    """The engines of one process, one per model shape, with the weight pushes and the trainer's rescoring."""

    def __init__(
        self,
        *,
        python: str,
        kv_cache_gib: int,
        threads: int | None,
        max_model_len: int,
        gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION,
    ):
        self.settings = {
            "python": python,
            "kv_cache_gib": kv_cache_gib,
            "threads": threads,
            "max_model_len": max_model_len,
            "gpu_memory_utilization": gpu_memory_utilization,
        }
        self.engines: dict[str, EngineProcess] = {}
        self.folder: Path | None = None
        self.last_engine_logprobs: list[list[float]] | None = None  # the check, for tests
        self.pushes = 0  # weight pushes so far (tests, logs)
        # scratch switches for the tests that break the push on purpose
        self.repack_head = True
        self.reset_cache = True
        atexit.register(self.close)

    # ---- engines and weights
    def _scratch(self) -> Path:
        if self.folder is None:
            shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
            # one folder per process (each data-parallel rank has its own engine), its rank in the name
            self.folder = Path(tempfile.mkdtemp(prefix=f"minillm-vllm-rank{_local_rank()}-", dir=shm))
        return self.folder

    def engine_for(self, model: nn.Module) -> EngineProcess:
        """The engine of ``model``'s shape, started on first use (its config and current weights)."""
        from minillm.rollout.sampler import _unwrap

        model = _unwrap(model)
        config = model.config.to_dict()
        # the shape decides the engine; names, dtypes and versions do not (a teacher of the student's shape
        # shares its engine, each sampling pushing the weights it asks for)
        key = json.dumps({k: v for k, v in sorted(config.items()) if k not in _NOT_SHAPE}, default=str)
        if key not in self.engines:
            check_model_shape("sampled model", config)
            max_len = min(self.settings["max_model_len"], int(config.get("max_position_embeddings") or 10**9))
            check_kv_budget("the sampled model", config, self.settings["kv_cache_gib"], max_len)
            folder = self._scratch() / f"model{len(self.engines)}"
            config_copy = copy.deepcopy(model.config)
            config_copy.architectures = [type(model).__name__]  # a model built from config may not name it
            config_copy.save_pretrained(folder)
            _save_weights(model, folder / "model.safetensors")
            threads = engine_threads(self.settings["threads"], 1)
            log.info(
                "sampler=vllm: rank %d starts an engine (process %d, %d thread%s) in %s for %s",
                _local_rank(),
                os.getpid(),
                threads,
                "" if threads == 1 else "s",
                folder,
                config.get("architectures"),
            )
            self.engines[key] = EngineProcess(
                self.settings["python"],
                folder,
                kv_cache_gib=self.settings["kv_cache_gib"],
                threads=self.settings["threads"],
                max_len=max_len,
                gpu_memory_utilization=self.settings["gpu_memory_utilization"],
            )
            self.engines[key].weights_key = _weights_key(model)
        engine = self.engines[key]
        self._push(engine, model)
        return engine

    def _push(self, engine: EngineProcess, model: nn.Module) -> None:
        """Send ``model``'s weights when they are not the ones the engine holds."""
        now = _weights_key(model)
        if engine.weights_key == now:
            return
        path = self._scratch() / "push.safetensors"
        _save_weights(model, path)
        engine.call(op="load", path=str(path), repack_head=self.repack_head, reset_cache=self.reset_cache)
        path.unlink(missing_ok=True)
        engine.weights_key = now
        self.pushes += 1

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()
        self.engines.clear()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    # ---- sampling
    def sample_ids(
        self,
        model: nn.Module,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingOptions,
        *,
        generator: torch.Generator | None,
    ) -> list[list[int]]:
        """One response per prompt (token ids, the EOS kept when a row stopped on it); the engine samples
        ``model`` alone (``sampling.teacher_mix_alpha`` must be 0)."""
        _refuse_teacher_mix(sampling)
        engine = self.engine_for(model)
        seeds = _row_seeds(len(prompts), generator)
        eos_token_id = sampling.eos_token_id
        stop = (
            []
            if eos_token_id is None
            else [eos_token_id]
            if isinstance(eos_token_id, int)
            else list(eos_token_id)
        )
        reply = engine.call(
            op="sample",
            prompts=[list(map(int, p)) for p in prompts],
            max_new_tokens=int(sampling.max_new_tokens),
            temperature=float(sampling.temperature),
            top_k=int(sampling.top_k),
            top_p=float(sampling.top_p),
            seeds=seeds,
            stop_token_ids=stop,
        )
        self.last_engine_logprobs = reply["logprobs"]
        return reply["tokens"]

    def generate(
        self,
        model: nn.Module,
        prompt_ids: Tensor,
        prompt_mask: Tensor,
        sampling: SamplingOptions,
        *,
        generator: torch.Generator | None = None,
        score: bool = True,
    ):
        """``minillm.rollout.sampler.generate`` with the engine picking the tokens: a Rollout of the same shapes.

        ``score``: fill ``student_logprobs`` (temperature 1) and ``mix_logprobs`` (the sampled-from distribution:
        temperature, top-k and top-p applied; 0 when greedy) from one no-grad pass of ``model``; without it both
        are 0 (callers that read only the tokens).
        """
        from minillm.rollout.sampler import check_prompts

        check_prompts(prompt_ids, prompt_mask)
        prompts = [
            [t for t, m in zip(ids, mask, strict=True) if m]
            for ids, mask in zip(prompt_ids.tolist(), prompt_mask.tolist(), strict=True)
        ]
        tokens = self.sample_ids(model, prompts, sampling, generator=generator)
        rollout = _as_rollout(prompt_ids, prompt_mask, tokens, sampling.pad_token_id)
        if score:
            rollout = rescore(model, rollout, sampling)
        return rollout


# ---------------------------------------------------------------- helpers
def _world_of_its_own(env: dict) -> dict:
    """The engine process's environment under a data-parallel launcher: none of the trainer's rank variables,
    and on CUDA only this rank's GPU (vLLM's single-process engine takes the first visible device)."""
    env = {k: v for k, v in env.items() if k not in _LAUNCHER_VARIABLES}
    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        env["CUDA_VISIBLE_DEVICES"] = devices[_local_rank() % len(devices)]
    return env


def _local_rank() -> int:
    """This process's rank on its machine (Lightning's launcher sets LOCAL_RANK; 0 before it runs)."""
    return int(os.environ.get("LOCAL_RANK") or 0)


def _weights_key(model: nn.Module) -> tuple:
    """Which weights ``model`` holds now: its identity and its parameters' in-place version counters (an
    optimizer step, ``load_state_dict`` and ``copy_`` each bump them)."""
    return (id(model), tuple(p._version for p in model.parameters()))


def _save_weights(model: nn.Module, path: Path) -> None:
    """``model``'s weights under their Hugging Face names, fp32, each storage once (a tied head is the
    embedding: the engine ties it again)."""
    from safetensors.torch import save_file

    seen, tensors = set(), {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        tensors[name] = tensor.detach().to("cpu", torch.float32).contiguous()
    save_file(tensors, str(path))


def _row_seeds(rows: int, generator: torch.Generator | None) -> list[int]:
    """One engine seed per row, drawn from ``generator`` (so a seeded run, and a resumed one, repeats)."""
    device = generator.device if generator is not None else "cpu"
    return torch.randint(0, 2**31 - 1, (rows,), generator=generator, device=device).tolist()


def _as_rollout(prompt_ids: Tensor, prompt_mask: Tensor, tokens: list[list[int]], pad_token_id: int):
    """The engine's responses as a Rollout (right-padded with ``pad_token_id``); log-probs 0 until rescored."""
    from minillm.rollout.sampler import Rollout

    width = max(1, max(len(t) for t in tokens))
    device = prompt_ids.device
    response_ids = torch.full((len(tokens), width), pad_token_id, dtype=torch.long)
    response_mask = torch.zeros((len(tokens), width), dtype=torch.long)
    for row, ids in enumerate(tokens):
        response_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        response_mask[row, : len(ids)] = 1
    zeros = torch.zeros((len(tokens), width), dtype=torch.float32, device=device)
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=response_ids.to(device),
        response_mask=response_mask.to(device),
        student_logprobs=zeros,
        teacher_logprobs=None,
        mix_logprobs=zeros.clone(),
        pad_token_id=pad_token_id,
    )


def _refuse_teacher_mix(sampling: SamplingOptions) -> None:
    if sampling.teacher_mix_alpha != 0.0:
        raise MinillmError(
            f"the vLLM engine samples the student alone: teacher_mix_alpha must be 0, got "
            f"{sampling.teacher_mix_alpha}"
        )


@torch.no_grad()
def rescore(model: nn.Module, rollout, sampling: SamplingOptions):
    """The rollout's ``student_logprobs`` and ``mix_logprobs`` from one no-grad, eval-mode pass of ``model``
    (the trainer's numbers, as our decoder records them, under ``sampling``'s temperature, top-k and top-p);
    (B, T) each, 0 outside ``response_mask``."""
    import dataclasses

    from minillm.rollout.sampler import _filter_top_k_top_p, response_logits

    was_training = model.training
    model.eval()
    try:
        logits = response_logits(model, rollout).float()  # (B, T, V)
    finally:
        model.train(was_training)
    mask = rollout.response_mask.float()
    idx = rollout.response_ids.unsqueeze(-1)
    student = torch.log_softmax(logits, dim=-1).gather(-1, idx).squeeze(-1) * mask
    temperature, top_k, top_p = sampling.temperature, sampling.top_k, sampling.top_p
    if temperature == 0:
        mix = torch.zeros_like(student)
    else:
        mix_logp = torch.log_softmax(logits / temperature, dim=-1)
        if top_k > 0 or top_p < 1.0:
            shape = mix_logp.shape
            flat = _filter_top_k_top_p(mix_logp.reshape(-1, shape[-1]), top_k, top_p)
            mix_logp = torch.log_softmax(flat, dim=-1).reshape(shape)
        mix = mix_logp.gather(-1, idx).squeeze(-1) * mask
    return dataclasses.replace(rollout, student_logprobs=student, mix_logprobs=mix)
