"""``make bench``: how close on-policy distillation runs to the hardware bound, measured.

``python -m minillm.bench [key=value ...]`` (Hydra app over ``conf/bench.yaml``, which composes the real
``objective`` and ``optim`` groups) times, for one teacher / student pair on random prompts of fixed length:

1. rollouts (``rollouts.py``): lockstep teacher-mixed decoding (α and α = 0) against the same tokens
   decoded by the student alone and by the teacher alone (``generate``, KV caches). Decoding the two
   models in lockstep can cost no less than the sum of the two, so the ratio lockstep / (student +
   teacher) is the overhead of mixing (target ≤ 1.25). Every row decodes exactly ``response_len`` tokens
   (``eos_token_id=None``), so all of them decode the same number of tokens;
2. one distillation round (``step.py``): ``minillm.training.round.MiniLLMRound``, the round
   ``OnPolicyModule.training_step`` runs, called without Lightning and split by its timer into rollout,
   teacher scoring, student forward+backward and optimizer; forward-pass token counts per model (forward
   hooks) against what the algorithm needs; peak memory;
3. a sweep of round time over response lengths and batch sizes, with a linearity fit (``sweep.py``);
4. a "GKD-equivalent" round (α = 0, the token reverse KL alone, one update per batch), comparable with
   TRL's ``GKDTrainer``;
5. the full-vocabulary single-step term's memory, in one pass and chunked (``vocab_memory.py``);
6. when TRL is installed (``pip install -e '.[bench]'``), TRL's ``GKDTrainer`` step and ours, timed
   alternately in the same run (``trl_gkd.py``); without TRL that comparison is skipped, saying why.

It prints tables (``tables.py``) and writes ``bench.json`` into the Hydra run folder (and to ``save_dir``
with ``save=true``). Speed is measured here, never asserted by tests. See docs/benchmarks.md.
"""
