"""The engine's side of ``sampler=vllm``: vLLM in a process of its own, run with the engine's Python.

vLLM pins another transformers than the project, so it lives in its own environment (``make install-vllm``:
``.venv-vllm``) and this file imports nothing of minillm's. ``minillm.rollout.vllm_engine`` starts it as
``PYTHON vllm_server.py`` and speaks one JSON object a line: a request on stdin, its answer on the process's
own stdout (everything vLLM prints goes to stderr). Requests, by ``op``:

- ``start``: build the in-process engine on a Hugging Face folder (config and first weights), fp32, eager;
- ``load``: replace the weights with a safetensors file's (the trainer's current ones), repack the tied output
  head and empty the prefix cache: without those two the engine keeps sampling from the old weights;
- ``sample``: one response per prompt (token ids in, token ids and each sampled token's log-prob out, at
  temperature 1 from the raw logits, so the caller can check them against its own);
- ``stop``.

An answer is ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import json
import os
import sys
import time


class Engine:
    """One vLLM ``LLM`` on one model, and the three things done with it."""

    def __init__(
        self, folder: str, max_model_len: int, seed: int, gpu_memory_utilization: float | None = None
    ):
        import torch
        from vllm import LLM

        self.tied = bool(
            json.loads(open(os.path.join(folder, "config.json")).read()).get("tie_word_embeddings")
        )
        self.llm = LLM(
            model=folder,
            dtype="float32",  # the trainer's log-probs are fp32: bf16 sampled from another distribution
            enforce_eager=True,  # compiling gains a few % for a minute's start
            max_model_len=max_model_len,
            skip_tokenizer_init=True,  # token ids in and out; the caller owns the tokenizer
            generation_config="vllm",  # no defaults from the model's generation_config.json
            seed=seed,
            # A prompt split over two steps discards the first step's sample and rewinds its seeded generator,
            # which CPU generators cannot do ("CPU Generator does not use offset"): prefill each prompt whole.
            enable_chunked_prefill=False,
            max_num_batched_tokens=max(max_model_len, 4096),
            # CUDA: the trainer shares the GPU, so the engine takes only its share of the memory (the CPU build
            # sizes its KV cache from VLLM_CPU_KVCACHE_SPACE instead)
            **(
                {"gpu_memory_utilization": gpu_memory_utilization}
                if torch.cuda.is_available() and gpu_memory_utilization is not None
                else {}
            ),
        )

    def load(self, path: str, repack_head: bool = True, reset_cache: bool = True) -> None:
        from safetensors.torch import load_file

        weights = load_file(path)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights.items())})
        if self.tied and repack_head:
            # The CPU backend multiplies by a packed copy of each linear weight, made once after loading. A head
            # tied to the embedding is not in the checkpoint, so the reload refreshes the embedding but leaves
            # the head's packed copy of the OLD embedding: pack it again.
            self.llm.collective_rpc(_repack_head)
        if reset_cache:
            self.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights

    def sample(self, request: dict) -> dict:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [
            SamplingParams(
                n=1,
                temperature=float(request["temperature"]),
                top_k=int(request["top_k"]),  # 0: off
                top_p=float(request["top_p"]),
                max_tokens=int(request["max_new_tokens"]),
                seed=int(seed),
                stop_token_ids=list(request["stop_token_ids"]),
                ignore_eos=True,  # only the caller's stop ids end a response (the EOS is kept, as ours)
                logprobs=0,  # the sampled token's own log-prob
                detokenize=False,
            )
            for seed in request["seeds"]
        ]
        prompts = [TokensPrompt(prompt_token_ids=list(p)) for p in request["prompts"]]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        tokens, logprobs = [], []
        for out in outputs:
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            tokens.append(ids)
            logprobs.append(
                [float(step[t].logprob) for step, t in zip(completion.logprobs or [], ids, strict=False)]
            )
        return {"tokens": tokens, "logprobs": logprobs}


def _repack_head(worker) -> None:
    """In the worker: redo the output head's post-load step (its packed weight) from the tied embedding."""
    model = worker.model_runner.get_model()
    head = getattr(model, "lm_head", None)
    method = getattr(head, "quant_method", None)
    if method is not None and hasattr(method, "process_weights_after_loading"):
        method.process_weights_after_loading(head)


def serve(requests, answer) -> None:
    engine: Engine | None = None
    for line in requests:
        request = json.loads(line)
        op = request.get("op")
        started = time.perf_counter()
        try:
            if op == "start":
                engine = Engine(
                    request["folder"],
                    int(request["max_model_len"]),
                    int(request["seed"]),
                    request.get("gpu_memory_utilization"),
                )
                reply: dict = {}
            elif op == "load":
                engine.load(
                    request["path"],
                    repack_head=request.get("repack_head", True),
                    reset_cache=request.get("reset_cache", True),
                )
                reply = {}
            elif op == "sample":
                reply = engine.sample(request)
            elif op == "stop":
                answer({"ok": True})
                return
            else:
                raise ValueError(f"unknown op {op!r}")
            reply.update(ok=True, seconds=time.perf_counter() - started)
        except Exception as err:  # the caller turns it into one line
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        answer(reply)


def main() -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1)  # the answers' own channel
    os.dup2(2, 1)  # whatever else is printed (vLLM's logs) goes to stderr

    def answer(reply: dict) -> None:
        out.write(json.dumps(reply) + "\n")
        out.flush()

    serve(sys.stdin, answer)
    # stdin closed (the trainer ended, however it ended) or a stop: leave now, without waiting for the engine's
    # own threads, which would keep an orphan alive
    out.close()
    os._exit(0)


if __name__ == "__main__":
    main()
