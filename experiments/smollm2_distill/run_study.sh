#!/usr/bin/env bash
# experiment=smollm2_distill end to end, stage by stage, with each stage's wall-clock time in stages.tsv:
# stage 1 (teacher SFT, student init), stage 2 (the sweep), the exact KL probe of each trained student against
# the teacher on held-out (valid) prompts, the report, the summary table and figures. Usage: bash experiments/smollm2_distill/run_study.sh [ARGS]
# (ARGS: extra overrides for every minillm.run / minillm.diagnose call, e.g. eval.num_samples=50).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=multirun/smollm2_distill
OUT=experiments/results/smollm2_distill
mkdir -p "$DIR" "$OUT"
stage() {  # stage NAME COMMAND...: run it, append "NAME<TAB>seconds<TAB>exit status" to $DIR/stages.tsv
  local name=$1 started status
  shift
  started=$(date +%s)
  echo "== $name: $* ($(date -Is), load $(cut -d' ' -f1-3 /proc/loadavg))"
  set +e
  "$@"
  status=$?
  set -e
  printf '%s\t%s\t%s\n' "$name" "$(($(date +%s) - started))" "$status" >> "$DIR/stages.tsv"
}
[ -f "$DIR/teacher_sft/best_model/config.json" ] ||
  stage teacher_sft python -m minillm.run experiment=smollm2_distill +arm=smollm2_distill/teacher_sft logger=csv "$@"
[ -f "$DIR/student_init/best_model/config.json" ] ||
  stage student_init python -m minillm.run experiment=smollm2_distill +arm=smollm2_distill/student_init logger=csv "$@"
stage sweep python -m minillm.run -m experiment=smollm2_distill logger=csv "$@"
stage diagnose_init python -m minillm.diagnose experiment=smollm2_distill diagnose.model=init \
  diagnose.num_prompts=48 'diagnose.seeds=[0]' hydra.run.dir="$DIR/diagnose/init" "$@"
for run in "$DIR"/*-s[0-9]; do
  name=$(basename "$run")
  stage "diagnose_$name" python -m minillm.diagnose experiment=smollm2_distill diagnose.path="$run" \
    diagnose.num_prompts=48 'diagnose.seeds=[0]' hydra.run.dir="$DIR/diagnose/$name" "$@"
done
stage report python -m minillm.report "$DIR" --out "$OUT/report.md"
stage summary python experiments/smollm2_distill/summarize.py "$DIR" --out "$OUT"
