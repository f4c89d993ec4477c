#!/usr/bin/env bash
# Issue 14 item 6: the GPU check, within 8 minutes on one CUDA GPU. A short MiniLLM run (embedded default,
# bf16: trainer=gpu) under strategy=ddp and under strategy=fsdp (one device each: the strategies' code paths,
# not their scaling), then `make bench` on CUDA (bf16, compiled decoding). Figures and logs go to
# experiments/results/gpu/: results.json and metrics.csv of each run, bench.json, env.txt, times.tsv.
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
# Issue 22 item 2: the lockstep α = 0.2 rollout, eager against sampler.decode=compiled (static cache, CUDA graphs
# through mode="reduce-overhead"), alternated; fp32 so that both sides' tokens can be compared.
timed decode_pair 150 "$PY" -m minillm.bench device=cuda pairs_only=true pairs.precision=false \
  pairs.round_build=false pairs.decode=compiled plain=true "hydra.run.dir=$RUNS/decode_pair"
[ -f "$RUNS/decode_pair/bench.json" ] && cp "$RUNS/decode_pair/bench.json" "$OUT/bench_decode_pair.json"
cat "$OUT/times.tsv"
