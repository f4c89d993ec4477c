"""LoRA students (``student.lora``): only the adapters train and are checkpointed, every objective runs,
a stopped run resumes exactly, and the exported ``best_model/`` (merged, or adapters plus base) reloads."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from minillm.config import validate_config
from minillm.errors import MinillmError
from minillm.run import train

from .test_resume import ON_POLICY, csv_rows
from .test_smoke import smoke_overrides

LORA = ["student.lora.r=4", "student.lora.alpha=8"]


def tiny_llama(seed: int = 0):
    from minillm.models.tiny import build_model

    arch = dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    arch.update(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True)
    return build_model(arch, 100, 0, seed=seed)


def lora_node(**changes):
    node = dict(r=4, alpha=8, dropout=0.0, target_modules="all-linear", export="merged")
    return OmegaConf.create({**node, **changes})


@pytest.mark.parametrize("objective", ["sft", "forward_kld", "seqkd", "reverse_kld"])
def test_lora_student_trains_only_its_adapters_with_every_objective(compose, tmp_path, objective):
    from transformers import AutoModelForCausalLM

    cfg = compose(
        smoke_overrides(tmp_path, f"objective={objective}", *LORA, "logger=csv", "eval.compare=false")
    )
    results = train(cfg)
    assert results["global_step"] == 3
    assert 0 < results["config"]["student_trained_params"] < results["config"]["student_params"] / 5

    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    keys = sorted(ckpt["state_dict"])
    # only the adapters: both low-rank factors of every linear layer (7 per Llama block, 2 blocks)
    assert len(keys) == 2 * 7 * 2
    assert all(k.startswith("student.") and (".lora_A." in k or ".lora_B." in k) for k in keys)
    n_opt = sum(len(g["params"]) for g in ckpt["optimizer_states"][0]["param_groups"])
    assert n_opt == len(keys)  # the optimizer holds the adapters and nothing else

    # best_model/: the adapters merged into the plain architecture, loadable without peft
    best = tmp_path / "run" / "best_model"
    assert not (best / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(best)
    assert type(merged).__module__.startswith("transformers.")
    init = AutoModelForCausalLM.from_config(merged.config)
    init.load_state_dict(_built_student(cfg).state_dict())
    trained, frozen = merged.state_dict(), init.state_dict()
    assert trained.keys() == frozen.keys()
    # what LoRA does not adapt is the student as loaded; the adapted projections moved
    assert torch.equal(trained["model.embed_tokens.weight"], frozen["model.embed_tokens.weight"])
    assert torch.equal(trained["model.norm.weight"], frozen["model.norm.weight"])
    assert not torch.equal(
        trained["model.layers.0.mlp.up_proj.weight"], frozen["model.layers.0.mlp.up_proj.weight"]
    )


def _built_student(cfg):
    """The run's student before training (built from student.arch with the run's seed and tokenizer)."""
    from minillm.data.datamodule import load_records
    from minillm.models.loading import load_model
    from minillm.models.tokenizers import resolve_tokenizer

    tokenizer = resolve_tokenizer(cfg, load_records(cfg.data, cfg.cache_dir))
    return load_model(
        cfg.student,
        key="student",
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        seed=cfg.seed,
    )


@pytest.mark.slow  # exact mid-round resume is tested without LoRA in the default suite; with it here
def test_lora_run_stopped_mid_round_resumes_exactly(compose, tmp_path):
    """The adapter-only checkpoint carries everything a resume needs: stopped inside a MiniLLM round and
    resumed, the run ends with the same weights and logs as one straight through."""

    def run(name, *extra):
        overrides = smoke_overrides(tmp_path, *ON_POLICY, *LORA, "logger=csv", "eval.compare=false", *extra)
        return train(compose(overrides, run_dir=tmp_path / name))

    from minillm.errors import RunInterrupted

    straight = run("straight")
    with pytest.raises(RunInterrupted):
        run("stopped", "fit.stop_at_step=5")
    ckpt = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    assert all(".lora_" in k for k in torch.load(ckpt, weights_only=False)["state_dict"])
    resumed = run("resume", f"ckpt_path={ckpt}")
    assert resumed["global_step"] == straight["global_step"] == 10
    assert resumed["final_weights_sha1"] == straight["final_weights_sha1"]  # base and adapters
    assert csv_rows(tmp_path / "straight") == csv_rows(tmp_path / "stopped")


def test_exports_reload_to_the_trained_student(tmp_path):
    """merged: a plain Hugging Face model with the adapted student's outputs; adapters: a peft folder
    whose base (best_model/base/) plus adapters give them exactly, through peft or transformers."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from minillm.models.lora import apply_lora, export_student
    from minillm.models.tiny import EOS

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_word_tokenizer(), eos_token=EOS, pad_token=EOS)
    ids = torch.randint(1, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    for export in ("merged", "adapters"):
        student = apply_lora(tiny_llama(), lora_node(export=export), seed=0)
        with torch.no_grad():  # trained adapters: B is no longer zero
            for name, p in student.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.2, generator=torch.Generator().manual_seed(len(name)))
        student.eval()
        expected = student(input_ids=ids).logits
        assert not torch.allclose(expected, tiny_llama()(input_ids=ids).logits, atol=1e-3)
        folder = tmp_path / export
        returned = export_student(student, tokenizer, folder, lora_node(export=export))
        torch.testing.assert_close(returned(input_ids=ids).logits, expected)
        if export == "merged":
            assert not (folder / "adapter_config.json").exists()
            reloaded = AutoModelForCausalLM.from_pretrained(folder)
            assert not any("lora" in k for k in reloaded.state_dict())
            torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-5)
        else:
            base = AutoModelForCausalLM.from_pretrained(folder / "base")
            assert not any("lora" in k for k in base.state_dict())
            torch.testing.assert_close(base(input_ids=ids).logits, tiny_llama()(input_ids=ids).logits)
            with_adapters = PeftModel.from_pretrained(base, folder).eval()
            torch.testing.assert_close(with_adapters(input_ids=ids).logits, expected)
            direct = AutoModelForCausalLM.from_pretrained(folder).eval()  # transformers reads adapter_config
            torch.testing.assert_close(direct(input_ids=ids).logits, expected)


def _word_tokenizer():
    from tokenizers import Tokenizer, models

    return Tokenizer(models.WordLevel({"<|endoftext|>": 0, "a": 1}, unk_token="a"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("student.lora.r=0", r"^student\.lora\.r=0: must be a positive integer \(null: no LoRA\)$"),
        ("student.lora.r=-2", r"^student\.lora\.r=-2: must be a positive integer"),
        ("student.lora.alpha=0", r"^student\.lora\.alpha=0(\.0)?: must be a number > 0$"),
        ("student.lora.dropout=1.0", r"^student\.lora\.dropout=1\.0: must be in \[0, 1\)$"),
        ("student.lora.target_modules=q_proj", r"^student\.lora\.target_modules='q_proj': use all-linear or"),
        (
            "student.lora.target_modules=[]",
            r"^student\.lora\.target_modules=\[\]: use all-linear or a non-empty",
        ),
        (
            "student.lora.export=full",
            r"^student\.lora\.export='full'; choose one of \['adapters', 'merged'\]$",
        ),
        (
            "+student.lora.rank=8",
            r"^student\.lora\.rank: not a key of student\.lora \(its keys: r, alpha, dropout, ",
        ),
    ],
)
def test_bad_lora_settings_are_one_line_errors(compose, override, message):
    cfg = compose(["student.lora.r=8", override])
    with pytest.raises(MinillmError, match=message):
        validate_config(cfg)


@pytest.mark.parametrize("student", ["embedded", "tiny_gpt2", "tiny_llama_xs", "tiny_llama_teacher_size"])
def test_lora_settings_work_with_any_student_preset(compose, student):
    """student.lora is declared once in config.yaml and read whatever the student preset."""
    cfg = compose([f"student={student}", "student.lora.r=8", "student.lora.target_modules=[q_proj,v_proj]"])
    validate_config(cfg)
    assert cfg.student.lora.r == 8 and list(cfg.student.lora.target_modules) == ["q_proj", "v_proj"]
    assert compose([f"student={student}"]).student.lora.r is None  # off by default


def test_target_modules_that_name_nothing_are_refused():
    from minillm.models.lora import apply_lora

    with pytest.raises(MinillmError, match=r"^student\.lora\.target_modules: 'c_attn' names no module of the "
                       r"student \(its linear layers: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, "
                       r"up_proj, v_proj; or use all-linear\)$"):  # fmt: skip
        apply_lora(tiny_llama(), lora_node(target_modules=["q_proj", "c_attn"]), seed=0)
    wrapped = apply_lora(tiny_llama(), lora_node(target_modules=["q_proj", "self_attn.v_proj"]), seed=0)
    trained = {
        n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in wrapped.named_parameters() if p.requires_grad
    }
    assert trained == {"q_proj", "v_proj"}


def test_same_seed_same_adapters_and_the_global_rng_untouched():
    from minillm.models.lora import apply_lora

    models = [tiny_llama() for _ in range(3)]
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = apply_lora(models[0], lora_node(), seed=5)
    b = apply_lora(models[1], lora_node(), seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)  # drawn from a fork seeded with `seed`
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    c = apply_lora(models[2], lora_node(), seed=6)
    assert not torch.equal(
        a.state_dict()["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"],
        c.state_dict()["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"],
    )


def test_a_checkpoint_with_other_adapters_is_refused(compose, tmp_path):
    from minillm.models.lora import apply_lora
    from minillm.training.supervised import SupervisedModule

    cfg = compose(["objective=sft", *LORA])
    module = SupervisedModule(apply_lora(tiny_llama(), lora_node(), seed=0), cfg, tokenizer=None)
    saved = module.checkpoint_state_dict()
    assert saved and all(".lora_" in k for k in saved)
    module.load_state_dict({k: torch.zeros_like(v) for k, v in saved.items()})  # the adapters alone load
    assert all(not v.any() for v in module.checkpoint_state_dict().values())
    other = SupervisedModule(
        apply_lora(tiny_llama(), lora_node(target_modules=["q_proj"]), seed=0), cfg, tokenizer=None
    )
    with pytest.raises(
        MinillmError, match=r"^the checkpoint's LoRA adapters do not fit this student \(unexpected "
    ):
        other.load_state_dict(saved)
    with pytest.raises(MinillmError, match=r"do not fit this student \(missing student\.base_model"):
        module.load_state_dict({})


def test_adapters_export_and_the_checkpoint_evaluate_as_the_same_student(compose, tmp_path):
    """student.lora.export=adapters: best_model/ is a peft folder with its base in best_model/base/;
    `python -m minillm.evaluate` loads it from the run directory, and the adapter-only best.ckpt (the
    run's student rebuilt from the checkpoint's config, the adapters merged) gives the same model."""
    from transformers import AutoModelForCausalLM

    from minillm.evaluation.loading import load_evaluated_model

    run = tmp_path / "run"
    overrides = smoke_overrides(tmp_path, "objective=sft", *LORA, "student.lora.export=adapters")
    train(compose([*overrides, "logger=none", "eval.compare=false"], run_dir=run))
    best = run / "best_model"
    assert (best / "adapter_config.json").is_file() and (best / "base" / "config.json").is_file()
    assert not (best / "config.json").exists()

    ids = torch.randint(1, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    logits = {}
    for name, where in (("folder", run), ("ckpt", run / "checkpoints" / "best.ckpt")):
        cfg = compose([*overrides, f"evaluate.path={where}"], config_name="evaluate")
        model, tokenizer, source = load_evaluated_model(cfg, {"test": []})
        assert len(tokenizer) == 400
        logits[name] = model.eval()(input_ids=ids).logits
    assert source.endswith("best.ckpt")
    torch.testing.assert_close(logits["ckpt"], logits["folder"], rtol=1e-4, atol=1e-5)
    base = AutoModelForCausalLM.from_pretrained(best / "base").eval()
    assert not torch.allclose(base(input_ids=ids).logits, logits["folder"], rtol=1e-4, atol=1e-5)  # trained
