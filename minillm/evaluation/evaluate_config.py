"""The ``evaluate`` node of ``conf/evaluate.yaml``, checked before anything is loaded; each error names its key."""

from __future__ import annotations

from omegaconf import OmegaConf

from minillm.errors import MinillmError

MODELS = ("student", "teacher", "init")
METRICS = ("rouge", "exposure", "calibration", "loss")


def validate_evaluate_config(cfg) -> None:
    """Check the ``evaluate`` node; each error names its key."""
    e = cfg.get("evaluate")
    if e is None:
        raise MinillmError(
            "evaluate: no such config node; run `python -m minillm.evaluate` (conf/evaluate.yaml)"
        )
    if e.model not in MODELS:
        raise MinillmError(f"evaluate.model={e.model!r}; choose one of {list(MODELS)}")
    if not e.metrics:
        raise MinillmError(f"evaluate.metrics=[]: name at least one of {list(METRICS)}")
    unknown = [m for m in e.metrics if m not in METRICS]
    if unknown:
        raise MinillmError(f"evaluate.metrics: unknown {unknown}; choose from {list(METRICS)}")
    for key in (
        "exposure.num_prompts",
        "exposure.samples_per_prompt",
        "exposure.max_new_tokens",
        "exposure.batch_size",
        "calibration.bins",
        "calibration.batch_size",
    ):
        value = OmegaConf.select(e, key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise MinillmError(f"evaluate.{key}={value!r}: must be a positive integer")
    n = e.no_repeat_ngram_size
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise MinillmError(f"evaluate.no_repeat_ngram_size={n!r}: must be an integer >= 0 (0 = off)")
    edges = list(e.length_buckets)
    if not edges or any(not isinstance(x, int) for x in edges) or edges != sorted(set(edges)):
        raise MinillmError(
            f"evaluate.length_buckets={edges}: give increasing integer upper edges, e.g. [5, 10]"
        )
    if not 0.0 <= float(e.exposure.min_alive) <= 1.0:
        raise MinillmError(f"evaluate.exposure.min_alive={e.exposure.min_alive!r}: must be in [0, 1]")
    if not e.calibration.templates or any("{label}" not in str(t) for t in e.calibration.templates):
        raise MinillmError("evaluate.calibration.templates: each template must contain {label}")
