#!/usr/bin/env bash
# Seconds and peak memory per MiniLLM round for teacher=smollm2_135m student=smollm2_pruned10 (issue 15 item 4):
# two rounds of each setting, no validation inside them, written to experiments/results/smollm2_distill/rounds/.
# Usage: bash experiments/smollm2_distill/measure.sh [NAME ...]   (default: all settings below)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=experiments/results/smollm2_distill/rounds
mkdir -p "$OUT"
COMMON=(teacher=smollm2_135m student=smollm2_pruned10 objective=reverse_kld logger=none eval.compare=false
  eval.num_samples=1 eval.max_new_tokens=4 select.save_hf=false data.n_train=400 objective.max_new_tokens=64
  objective.mini_batch_size=8)  # a later objective.mini_batch_size wins
declare -A SETTINGS=(
  [r8_cache_1thread]="data.batch_size=8 trainer.max_steps=8 fit.num_threads=1"
  [r8_cache_2threads]="data.batch_size=8 trainer.max_steps=8 fit.num_threads=2"
  [r8_cache_chunk16]="data.batch_size=8 trainer.max_steps=8 fit.num_threads=1 objective.chunk_size=16"
  [r8_rescore]="data.batch_size=8 trainer.max_steps=8 fit.num_threads=1 objective.teacher_cache_mb=0"
  [r16_cache]="data.batch_size=16 trainer.max_steps=16 fit.num_threads=1"
  [r8_mb4]="data.batch_size=8 trainer.max_steps=16 fit.num_threads=1 objective.mini_batch_size=4"
)
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(r8_cache_1thread r8_cache_chunk16 r8_rescore r16_cache r8_cache_2threads r8_mb4)
for name in "${NAMES[@]}"; do
  run_dir="outputs/smollm2_measure/$name"
  mkdir -p "$(dirname "$run_dir")"
  echo "== $name: ${SETTINGS[$name]} (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  # shellcheck disable=SC2086
  python experiments/smollm2_distill/measure_round.py "${COMMON[@]}" ${SETTINGS[$name]} hydra.run.dir="$run_dir" \
    > "$run_dir.log" 2>&1 || { mkdir -p "$run_dir"; echo "failed: see $run_dir.log"; continue; }
  python - "$run_dir/rounds.json" "$OUT/$name.json" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
summary["load_average_after"] = sys.argv[3]
json.dump(summary, open(sys.argv[2], "w"), indent=2)
print({k: v for k, v in summary.items() if k not in ("overrides",)})
PY
done
