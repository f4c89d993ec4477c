"""Hydra entry point: ``python -m minillm.diagnose diagnose.path=RUN_DIR [key=value ...]``.

What reverse KL to the teacher buys, on held-out prompts (issue 17): exact token-level KL(q‖p) on the
student's samples and KL(p‖q) on the teacher's (and both on the gold responses), sequence-level KL, the
share of the teacher's invalid answers the student copies, and validity per category with quoted invalid
responses. Writes ``diagnose.json`` and ``diagnose.md`` into the run folder. Config: ``conf/diagnose.yaml``;
the computations: ``minillm.evaluation.divergence_probe``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from minillm.cli import hydra_app, quiet_libraries

quiet_libraries()

MODELS = ("student", "init")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def validate_diagnose_config(cfg) -> None:
    """Check the ``diagnose`` node; each error names its key."""
    from minillm.errors import MinillmError

    d = cfg.get("diagnose")
    if d is None:
        raise MinillmError(
            "diagnose: no such config node; run `python -m minillm.diagnose` (conf/diagnose.yaml)"
        )
    if d.model not in MODELS:
        raise MinillmError(f"diagnose.model={d.model!r}; choose one of {list(MODELS)}")
    for key in ("batch_size", "max_new_tokens", "quotes"):
        if not _positive_int(d[key]) and not (key == "quotes" and d[key] == 0):
            raise MinillmError(f"diagnose.{key}={d[key]!r}: must be a positive integer")
    if d.num_prompts is not None and not _positive_int(d.num_prompts):
        raise MinillmError(
            f"diagnose.num_prompts={d.num_prompts!r}: must be a positive integer or null (all)"
        )
    seeds = list(d.seeds) if d.seeds is not None else []
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise MinillmError(f"diagnose.seeds={seeds}: give a non-empty list of integers, e.g. [0,1,2]")
    if len(set(seeds)) != len(seeds):
        raise MinillmError(f"diagnose.seeds={seeds}: a seed twice would count the same samples twice")
    if not (cfg.teacher.get("path") or cfg.teacher.get("arch")):
        raise MinillmError(
            "teacher: minillm.diagnose compares the student with a teacher; teacher=none has none"
        )


def run_diagnose(cfg) -> dict:
    """Probe the student against the teacher on ``diagnose.split``; write and return the results."""
    import json
    import time
    from pathlib import Path

    import torch
    from omegaconf import OmegaConf

    from minillm.config import validate_config
    from minillm.data.datamodule import load_records
    from minillm.data.datasets import tokenize_records
    from minillm.data.template import PromptTemplate
    from minillm.errors import MinillmError
    from minillm.evaluation.divergence_probe import diagnose_markdown, probe, summarise, summary_table
    from minillm.evaluation.loading import load_evaluated_model, load_teacher
    from minillm.models.prepare import prepare_models
    from minillm.rollout import vllm_engine

    validate_config(cfg)
    validate_diagnose_config(cfg)
    prepare_models(cfg)
    vllm_engine.configure(cfg)  # sampler=vllm: the engine (started on first use); hf: none
    d = cfg.diagnose
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()

    records = load_records(cfg.data, cfg.cache_dir)
    if d.split not in records:
        raise MinillmError(f"diagnose.split={d.split!r}; choose one of {sorted(records)}")
    student, tokenizer, source = load_evaluated_model(cfg, records, node="diagnose")
    teacher = load_teacher(cfg, tokenizer, student)
    device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" and torch.cuda.is_available() else "cpu")
    student.to(device).eval()
    teacher.to(device).eval()
    examples = tokenize_records(
        records[d.split],
        tokenizer,
        PromptTemplate.from_name(cfg.data.template, tokenizer),
        max_prompt_len=cfg.data.max_prompt_len,
        max_response_len=cfg.data.max_response_len,
        split=d.split,
    )
    if not examples:
        raise MinillmError(
            f"diagnose.split={d.split}: no prompt fits data.max_prompt_len={cfg.data.max_prompt_len}"
        )
    examples = examples[: d.num_prompts] if d.num_prompts else examples
    rows = probe(
        student,
        teacher,
        tokenizer,
        examples,
        records[d.split],
        seeds=tuple(d.seeds),
        batch_size=d.batch_size,
        max_new_tokens=d.max_new_tokens,
    )
    result = {
        "kind": "minillm.diagnose",
        "model": d.model if not d.get("path") else "student",
        "source": source,
        "teacher": str(cfg.teacher.get("path") or cfg.teacher.get("name")),
        "split": d.split,
        "settings": {
            "num_prompts": len(examples),
            "seeds": list(d.seeds),
            "max_new_tokens": d.max_new_tokens,
            "batch_size": d.batch_size,
            "temperature": 1.0,
            "seed": cfg.seed,
        },
        **summarise(rows, records[d.split], examples, quotes=d.quotes),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    (run_dir / "diagnose.json").write_text(json.dumps(result, indent=2, default=str))
    (run_dir / "diagnose.md").write_text(diagnose_markdown(result))
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    print(summary_table(result))
    print(f"results: {run_dir / 'diagnose.json'}\nsummary: {run_dir / 'diagnose.md'}")
    return result


@hydra_app("diagnose")
def main(cfg: DictConfig) -> float | None:
    return run_diagnose(cfg)["kl"]["student"].get("reverse_kl")


if __name__ == "__main__":
    main()
