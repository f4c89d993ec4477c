#!/usr/bin/env bash
# Issue 14 item 6: the GPU check, within 10 minutes on one CUDA GPU. A short MiniLLM run (embedded default,
# bf16: trainer=gpu) under strategy=ddp and under strategy=fsdp (one device each: the strategies' code paths,
# not their scaling), then `make bench` on CUDA (bf16, compiled decoding), then (issue 23 item 7) sampler=hf
# against sampler=vllm on CUDA: the official vllm of requirements-vllm-cuda.txt, installed beforehand by
# `make install-vllm` (the GPU machine may have no network) into .venv-vllm or at $MINILLM_VLLM_PYTHON; skipped,
# saying so, without it. Figures and logs go to experiments/results/gpu/: results.json and metrics.csv of each
# run, bench.json, samplers.json, env.txt, times.tsv.
# Usage: bash experiments/gpu_check.sh            (PYTHON=... to name the interpreter; default: python3)
# Needs torch with CUDA, lightning, transformers, hydra-core, omegaconf, rouge-score (pip install -e .).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=experiments/results/gpu
RUNS=${GPU_CHECK_DIR:-$(mktemp -d)}
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device')"
mkdir -p "$OUT"
"$PY" - > "$OUT/env.txt" <<'PYEOF'
import torch, lightning, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "lightning", lightning.__version__,
      "transformers", transformers.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NONE")
PYEOF
cat "$OUT/env.txt"
printf 'step\tseconds\texit status\n' > "$OUT/times.tsv"
timed() {  # timed NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2 started status
  shift 2
  started=$(date +%s)
  set +e
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | tail -n 25
  status=${PIPESTATUS[0]}
  set -e
  printf '%s\t%s\t%s\n' "$name" "$(($(date +%s) - started))" "$status" >> "$OUT/times.tsv"
}
for strategy in ddp fsdp; do
  timed "run_$strategy" 150 "$PY" -m minillm.run objective=reverse_kld trainer=gpu "strategy=$strategy" \
    trainer.devices=1 trainer.max_steps=64 logger=csv eval.num_samples=200 "hydra.run.dir=$RUNS/$strategy"
  [ -f "$RUNS/$strategy/results.json" ] && cp "$RUNS/$strategy/results.json" "$OUT/results_$strategy.json"
  [ -f "$RUNS/$strategy/csv/metrics.csv" ] && cp "$RUNS/$strategy/csv/metrics.csv" "$OUT/metrics_$strategy.csv"
done
timed bench 150 "$PY" -m minillm.bench device=cuda dtype=bf16 compile=true plain=true save=true "save_dir=$PWD/$OUT" \
  "hydra.run.dir=$RUNS/bench"
# hf against vllm, alternated in one process (experiments/bench_samplers.py: rollout, an α = 0 round, evaluation
# sampling), fp32 as the engine samples, on a random-init pair whose head size (64) every vLLM attention kernel
# takes (the embedded pair's 8 is refused); SAMPLERS_ARGS replaces the models, e.g. the SmolLM2 pair's paths.
VLLM_PY=${MINILLM_VLLM_PYTHON:-$PWD/.venv-vllm/bin/python}
SAMPLERS_ARGS=${SAMPLERS_ARGS:-teacher=tiny_llama student=tiny_llama \
  student.arch.hidden_size=256 student.arch.intermediate_size=704 student.arch.num_hidden_layers=4 \
  student.arch.num_attention_heads=4 student.arch.num_key_value_heads=4 \
  teacher.arch.hidden_size=512 teacher.arch.intermediate_size=1408 teacher.arch.num_hidden_layers=4 \
  teacher.arch.num_attention_heads=8 teacher.arch.num_key_value_heads=8}
if [ -x "$VLLM_PY" ]; then
  # shellcheck disable=SC2086  # SAMPLERS_ARGS is a list of overrides
  timed samplers 150 "$PY" experiments/bench_samplers.py "$RUNS/samplers" device=cuda dtype=fp32 \
    "samplers.python=$VLLM_PY" samplers.gpu_memory_utilization=0.3 objective.num_rollouts=32 response_len=128 \
    samplers.eval_prompts=64 $SAMPLERS_ARGS
  [ -f "$RUNS/samplers/samplers.json" ] && cp "$RUNS/samplers/samplers.json" "$OUT/samplers.json"
else
  echo "samplers: skipped: no vLLM engine at $VLLM_PY (make install-vllm, or MINILLM_VLLM_PYTHON=...)" \
    | tee "$OUT/samplers.log"
  printf 'samplers\t0\tskipped (no engine)\n' >> "$OUT/times.tsv"
fi
# Issue 22 item 2: the lockstep α = 0.2 rollout, eager against sampler.decode=compiled (static cache, CUDA graphs
# through mode="reduce-overhead"), alternated; fp32 so that both sides' tokens can be compared.
timed decode_pair 150 "$PY" -m minillm.bench device=cuda pairs_only=true pairs.precision=false \
  pairs.round_build=false pairs.decode=compiled plain=true "hydra.run.dir=$RUNS/decode_pair"
[ -f "$RUNS/decode_pair/bench.json" ] && cp "$RUNS/decode_pair/bench.json" "$OUT/bench_decode_pair.json"
# The whole MiniLLM round, fp32 eager against bf16-mixed with compiled decoding and compiled updates
# (pairs.fast_path_updates=compiled, the default: fit.compile_updates), alternated, with each side's split.
timed fast_path 120 "$PY" -m minillm.bench device=cuda pairs_only=true pairs.precision=false \
  pairs.round_build=false pairs.decode=null pairs.draw=false pairs.fast_path=compiled plain=true \
  "hydra.run.dir=$RUNS/fast_path"
[ -f "$RUNS/fast_path/bench.json" ] && cp "$RUNS/fast_path/bench.json" "$OUT/bench_fast_path.json"
cat "$OUT/times.tsv"
