#!/usr/bin/env bash
# Issue 22 item 5: the bf16-mixed vs fp32 study (experiments/results/precision/README.md).
#   bash experiments/precision/run_study.sh embedded ARM SEED   # one run of part (a): ARM bf16 | fp32
#   bash experiments/precision/run_study.sh smollm2 ARM SEED    # one run of part (b)
#   bash experiments/precision/run_study.sh make_run            # make run's 3 minutes in fp32, bf16 and auto, side by side
#   bash experiments/precision/run_study.sh collect RUN         # keep the small files of a finished run
# Each run trains in multirun/precision/<run>/ (checkpoints stay there) and its config.yaml, csv/metrics.csv and
# results.json are copied into experiments/results/precision/runs/<run>/; each start and end is logged with the
# load average (the study's loads.txt); then
#   python experiments/precision/analyze.py
# The study ran a seed's bf16 and fp32 runs side by side (one torch thread each), so that a pair shares the
# machine's load.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=offline
RESULTS=experiments/results/precision

collect() {  # collect RUN_NAME: copy the small files of a finished run
  local dir=multirun/precision/$1
  mkdir -p "$RESULTS/runs/$1"
  cp "$dir/config.yaml" "$dir/results.json" "$RESULTS/runs/$1/"
  cp "$dir/csv/metrics.csv" "$RESULTS/runs/$1/metrics.csv"
}

run_one() {  # run_one RUN_NAME ARGS...: train, then keep the small files
  local name=$1
  shift
  local dir=multirun/precision/$name
  if [ -f "$RESULTS/runs/$name/results.json" ]; then
    echo "skip $name (done)"
    return
  fi
  echo "== $name start $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  "$PY" -m minillm.run "$@" hydra.run.dir="$dir" >"$dir.log" 2>&1 || { echo "$name failed (see $dir.log)"; return 1; }
  collect "$name"
  echo "== $name done $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
}

mkdir -p multirun/precision
case "${1:-}" in
  embedded)
    run_one "$2-s$3" experiment=precision +arm=precision/"$2" seed="$3"
    ;;
  smollm2)
    run_one "smollm2-$2-s$3" experiment=precision_smollm2 +arm=precision/"$2" seed="$3"
    ;;
  make_run)  # `make run` (trainer.max_time=00:00:03:00, every other key its default) in each precision and in
    # `auto`, the three side by side; the end-of-run table on the first 50 test prompts only (it does not change
    # the steps trained), and auto's one decision line kept in auto.log. (The study's runs set the two keys
    # through +arm=precision/fp32, precision/bf16 and a precision/auto arm with exactly these two keys.)
    declare -A ASKED=([fp32]=32-true [bf16]=bf16-mixed [auto]=auto)
    for arm in fp32 bf16 auto; do
      run_one "make_run-$arm" trainer.max_time=00:00:03:00 arm_name=$arm trainer.precision="${ASKED[$arm]}" fit.num_threads=1 \
        experiment_name=precision run_name="make_run-$arm" eval.compare=false eval.num_samples=50 &
    done
    wait
    grep -o "trainer.precision=auto: .*" multirun/precision/make_run-auto.log | head -1 >"$RESULTS/auto.log"
    ;;
  collect)
    collect "$2"
    ;;
  *)
    echo "usage: $0 embedded|smollm2 ARM SEED | make_run | collect RUN" >&2
    exit 2
    ;;
esac
