#!/usr/bin/env bash
# experiment=smollm2_distill end to end, stage by stage, with each stage's wall-clock time in stages.tsv:
# stage 1 (teacher SFT, student init; skipped when their folders exist), stage 2 (SFT/KD/SeqKD/MiniLLM x 2
# budgets x 2 seeds) and stage 3 (issue 16's methods, seed 0) as two lanes side by side (one torch thread
# each on 2 cores; lane A draws SeqKD's teacher samples first, lane B reaches SeqKD last), the exact KL probe
# of each trained student against the teacher on held-out (valid) prompts, the summary and its figures.
# Usage: bash experiments/smollm2_distill/run_study.sh [ARGS]   (ARGS: extra overrides for every job)
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=multirun/smollm2_distill
OUT=experiments/results/smollm2_distill
PY=${PYTHON:-python}
mkdir -p "$DIR" "$OUT"
stage() {  # stage NAME COMMAND...: run it, append "NAME<TAB>seconds<TAB>exit status<TAB>load" to stages.tsv
  local name=$1 started status load
  shift
  started=$(date +%s)
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "== $name: $* ($(date -Is), load $load)"
  set +e
  "$@"
  status=$?
  set -e
  printf '%s\t%s\t%s\t%s\n' "$name" "$(($(date +%s) - started))" "$status" "$load" >> "$DIR/stages.tsv"
}
[ -f "$DIR/teacher_sft/best_model/config.json" ] ||
  stage teacher_sft "$PY" -m minillm.run experiment=smollm2_distill +arm=smollm2_distill/teacher_sft logger=csv "$@"
[ -f "$DIR/student_init/best_model/config.json" ] ||
  stage student_init "$PY" -m minillm.run experiment=smollm2_distill +arm=smollm2_distill/student_init logger=csv "$@"
STAGE2=(experiment=smollm2_distill data.n_train=480 logger=csv)
lane_a() {
  stage sweep_seed0 "$PY" -m minillm.run -m "${STAGE2[@]}" seed=0 \
    +arm=smollm2_distill/seqkd,smollm2_distill/sft,smollm2_distill/kd,smollm2_distill/minillm "$@"
  stage methods_seed0 "$PY" -m minillm.run -m "${STAGE2[@]}" seed=0 \
    +arm=smollm2_distill/onpolicy_rkl,smollm2_distill/gkd,smollm2_distill/distillm,smollm2_distill/taid,smollm2_distill/distillm2 "$@"
}
lane_b() {
  stage sweep_seed1 "$PY" -m minillm.run -m "${STAGE2[@]}" seed=1 \
    +arm=smollm2_distill/minillm,smollm2_distill/sft,smollm2_distill/kd,smollm2_distill/seqkd "$@"
}
lane_a "$@" > "$DIR/lane_a.log" 2>&1 &
A=$!
sleep 60  # lane A loads first (and starts SeqKD's sampling)
lane_b "$@" > "$DIR/lane_b.log" 2>&1 &
B=$!
wait $A $B
stage diagnose_init "$PY" -m minillm.diagnose "${STAGE2[@]}" diagnose.model=init \
  diagnose.num_prompts=32 'diagnose.seeds=[0]' hydra.run.dir="$DIR/diagnose/init" "$@"
for run in "$DIR"/*-s[0-9]; do
  name=$(basename "$run")
  stage "diagnose_$name" "$PY" -m minillm.diagnose "${STAGE2[@]}" diagnose.path="$run" \
    diagnose.num_prompts=32 'diagnose.seeds=[0]' hydra.run.dir="$DIR/diagnose/$name" "$@"
done
"$PY" experiments/smollm2_distill/summarize.py "$DIR" --out "$OUT"
