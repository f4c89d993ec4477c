"""The bundled data set and its checkers: determinism, splits, and that the checkers accept every
correct answer (not only the reference) while rejecting hybrids, wrong facts and wrong counts."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest

from minillm.data import bundled
from minillm.data.checkers import is_valid, label_words, normalize
from minillm.errors import MinillmError

SLOT = re.compile(r"\{([a-z]+)(\d*)\}")


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return bundled.generate_records(2700, seed=0)


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return bundled.make_splits(seed=0, n_train=2000, n_valid=150, n_test=150)


def by_category(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {c: [] for c in bundled.CATEGORIES}
    for r in records:
        out[r["category"]].append(r)
    return out


# --- helpers that build answers from a check spec, independently of the generator ---------------


def slot_names(template: str) -> list[str]:
    return list(dict.fromkeys(m.group(1) + m.group(2) for m in SLOT.finditer(template)))


def render(template: str, values: dict[str, str]) -> str:
    return SLOT.sub(lambda m: values[m.group(1) + m.group(2)], template)


def fresh_values(check: dict, template: str, rng: random.Random) -> dict[str, str]:
    """A random correct filling: distinct items per pool, required items used, step order obeyed."""
    names = slot_names(template)
    values: dict[str, str] = {}
    for pool, items in check["pools"].items():
        slots = [n for n in names if n.rstrip("0123456789") == pool]
        if pool in check.get("all", []):
            chosen = topological(items, check.get("before", []), rng)
        else:
            required = [w for w in check.get("require", []) if w in items]
            chosen = required + rng.sample(
                [i for i in items if i not in required], len(slots) - len(required)
            )
        values.update(zip(slots, chosen, strict=True))
    return values


def topological(items: list[str], before: list[list[str]], rng: random.Random) -> list[str]:
    remaining, order = list(items), []
    while remaining:
        ready = [x for x in remaining if not any(b == x and a in remaining for a, b in before)]
        order.append(rng.choice(ready))
        remaining.remove(order[-1])
    return order


def renderings(record: dict, rng: random.Random) -> list[str]:
    """One correct answer per template (slots) or every listed answer (exact / label)."""
    check = record["check"]
    if check["type"] == "slots":
        return [render(t, fresh_values(check, t, rng)) for t in check["templates"]]
    return list(check["answers"])


def which_template(record: dict) -> int:
    check = record["check"]
    if check["type"] == "slots":
        hits = [
            i
            for i, t in enumerate(check["templates"])
            if is_valid(record["response"], {**check, "templates": [t]})
        ]
    else:
        hits = [i for i, a in enumerate(check["answers"]) if normalize(a) == normalize(record["response"])]
    assert hits, record
    return hits[0]


def glue(a: str, b: str) -> str:
    """First half of one answer's words followed by the second half of another's."""
    wa, wb = a.split(), b.split()
    return " ".join(wa[: max(1, len(wa) // 2)] + wb[len(wb) // 2 :])


# --- determinism, format, splits -----------------------------------------------------------------


def test_deterministic_and_seed_dependent():
    a = bundled.generate_records(60, seed=0)
    assert a == bundled.generate_records(60, seed=0)
    assert a != bundled.generate_records(60, seed=1)
    assert bundled.build_world(0).countries != bundled.build_world(1).countries


def test_more_records_share_the_same_world_and_prefix(records):
    assert bundled.generate_records(90, seed=0) == records[:90]


def test_record_format_and_categories(records):
    assert len(bundled.CATEGORIES) == 8
    counts = Counter(r["category"] for r in records)
    assert set(counts) == set(bundled.CATEGORIES)
    assert min(counts.values()) >= len(records) // 12  # roughly balanced
    for i, r in enumerate(records[:200]):
        assert set(r) == {"id", "category", "instruction", "context", "response", "check"}
        assert r["id"] == f"bundled-{i:06d}"
        assert isinstance(r["context"], str) and r["instruction"] and r["response"]
        assert json.loads(json.dumps(r["check"])) == r["check"]
        assert (r["instruction"] + r["context"] + r["response"]).isascii()


def test_splits_sizes_and_disjoint_prompts(splits):
    assert {k: len(v) for k, v in splits.items()} == {"train": 2000, "valid": 150, "test": 150}
    prompts = {k: {(r["instruction"], r["context"]) for r in v} for k, v in splits.items()}
    assert not prompts["train"] & prompts["valid"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["valid"] & prompts["test"]
    assert len(prompts["valid"]) == 150 and len(prompts["test"]) == 150  # no repeats within eval splits
    assert set(Counter(r["category"] for r in splits["test"])) == set(bundled.CATEGORIES)
    assert splits == bundled.make_splits(seed=0, n_train=2000, n_valid=150, n_test=150)


def test_eval_facts_are_learnable_from_train(splits):
    taught = {json.dumps(r["check"]) for r in splits["train"] if r["category"] in ("open_qa", "closed_qa")}
    for r in splits["valid"] + splits["test"]:
        if r["category"] == "open_qa":
            assert json.dumps(r["check"]) in taught, r["instruction"]


def test_negative_sizes_are_a_clear_error():
    with pytest.raises(MinillmError, match="n_valid"):
        bundled.make_splits(n_train=10, n_valid=-1, n_test=1)


def test_write_splits(tmp_path):
    paths = bundled.write_splits(tmp_path / "data", seed=3, n_train=60, n_valid=10, n_test=10)
    for name, size in (("train", 60), ("valid", 10), ("test", 10)):
        lines = paths[name].read_text(encoding="utf-8").splitlines()
        assert paths[name].name == f"{name}.jsonl" and len(lines) == size
        assert all(json.loads(line)["check"] for line in lines)
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    assert meta["seed"] == 3 and meta["generator_version"] == bundled.GENERATOR_VERSION
    assert meta["sizes"] == {"train": 60, "valid": 10, "test": 10}


def test_world_text_states_facts():
    world = bundled.build_world(0)
    text = bundled.world_text(0)
    assert 300 <= len(text.splitlines()) <= 1000
    country = world.countries[0]
    assert f"The capital of {country} is {world.facts['capital'][country]}." in text
    assert len(world.fact_list()) >= 400


# --- size of the language ------------------------------------------------------------------------


def test_response_lengths_span_short_to_long(records):
    lengths = sorted(len(r["response"].split()) for r in records)
    assert lengths[0] < 5 and lengths[-1] > 60
    assert 5 <= lengths[len(lengths) // 2] <= 40  # most responses are short to medium


def test_vocabulary_is_moderate(records):
    prompt_words = {
        w for r in records for w in re.findall(r"[a-z0-9]+", (r["instruction"] + " " + r["context"]).lower())
    }
    all_words = prompt_words | {w for r in records for w in re.findall(r"[a-z0-9]+", r["response"].lower())}
    assert 800 <= len(prompt_words) <= 3000
    assert len(all_words) <= 3000


# --- checkers: every correct answer passes, near misses fail --------------------------------------


def test_every_reference_is_valid(records):
    bad = [r for r in records if not is_valid(r["response"], r["check"])]
    assert not bad, bad[:3]


@pytest.mark.parametrize("category", bundled.CATEGORIES)
def test_several_templates_occur(records, category):
    used = Counter(which_template(r) for r in by_category(records)[category])
    assert len(used) >= 2, used


@pytest.mark.parametrize("category", bundled.CATEGORIES)
def test_alternative_answers_are_accepted(records, category):
    rng = random.Random(0)
    for r in by_category(records)[category][:40]:
        for answer in renderings(r, rng):
            assert is_valid(answer, r["check"]), (answer, r["check"])
            assert is_valid(f"  {answer.upper().rstrip('.')} !", r["check"])  # case, spaces, punctuation


@pytest.mark.parametrize("category", bundled.CATEGORIES)
def test_hybrids_of_two_templates_are_rejected(records, category):
    rng = random.Random(1)
    tried = 0
    for r in by_category(records)[category][:60]:
        check = r["check"]
        if check["type"] == "slots":
            values = {}
            for t in check["templates"]:
                values.update(fresh_values(check, t, rng))
            answers = [render(t, values) for t in check["templates"]]
        else:
            answers = list(check["answers"])
        forms = {normalize(a) for a in answers}
        for a in answers:
            for b in answers:
                hybrid = glue(a, b)
                if a != b and normalize(hybrid) not in forms:
                    tried += 1
                    assert not is_valid(hybrid, check), (hybrid, check)
    assert tried >= 20


def test_the_brief_example():
    check = {
        "type": "slots",
        "templates": [
            "{x1} and {x2}.",
            "Two farm animals are the {x1} and the {x2}.",
            "The {x1} and the {x2} are farm animals.",
        ],
        "pools": {"x": ["cow", "pig", "hen", "goat"]},
    }
    for ok in (
        "Two farm animals are the cow and the pig.",
        "The pig and the cow are farm animals.",
        "Cow and pig.",
        "hen AND goat",
    ):
        assert is_valid(ok, check), ok
    for bad in (
        "The cow and the pig are the cow.",  # hybrid
        "Two farm animals are the cow and the cow.",  # repeated item
        "Cow, pig and hen.",  # wrong count
        "Cow.",
        "Cow and horse.",  # not in the set
        "Two farm animals are the cow and the pig are farm animals.",
        "",
    ):
        assert not is_valid(bad, check), bad


def test_step_order_constraints():
    check = {
        "type": "slots",
        "templates": ["First, {s1}. Then, {s2}. Finally, {s3}."],
        "pools": {"s": ["boil water", "add tea", "drink it"]},
        "all": ["s"],
        "before": [["boil water", "drink it"], ["add tea", "drink it"]],
    }
    assert is_valid("First, boil water. Then, add tea. Finally, drink it.", check)
    assert is_valid("First, add tea. Then, boil water. Finally, drink it.", check)
    assert not is_valid("First, drink it. Then, boil water. Finally, add tea.", check)
    assert not is_valid("First, boil water. Then, add tea. Finally, add tea.", check)


def _corrupt(record: dict, world: bundled.World, rng: random.Random) -> str | None:
    """Swap one fact word of the reference (a name, year, job, label ...) for another of its kind,
    preferring words the prompt does not contain (the asked-for object, not the subject)."""
    kinds = [
        list(world.cities),
        list(world.countries),
        list(world.first_names),
        list(bundled.JOBS),
        list(bundled.NATIONAL_ANIMALS),
        [g for g in bundled.GOODS if " " not in g],
        [str(y) for y in range(1050, 2100)],
        ["spring", "summer", "autumn", "winter"],
        ["positive", "negative"],
        ["person", "city", "country"],
        sorted({wc.label for wc in bundled.WORD_CLASSES if " " not in wc.label}),
    ]
    prompt = set(normalize(record["instruction"] + " " + record["context"]).split())
    words = record["response"].split()
    order = sorted(range(len(words)), key=lambda i: normalize(words[i]) in prompt)
    for i in order:
        core = words[i].strip(".,:!?")
        for kind in kinds:
            if core in kind or core.lower() in kind:
                other = rng.choice([w for w in kind if w.lower() != core.lower()])
                return " ".join(words[:i] + [words[i].replace(core, other)] + words[i + 1 :])
    return None


@pytest.mark.parametrize(
    "category", ["open_qa", "closed_qa", "classification", "information_extraction", "summarization"]
)
def test_wrong_facts_are_rejected(records, category):
    world, rng, tried = bundled.build_world(0), random.Random(2), 0
    for r in by_category(records)[category][:80]:
        wrong = _corrupt(r, world, rng)
        if wrong is not None:
            tried += 1
            assert not is_valid(wrong, r["check"]), (wrong, r["check"])
    assert tried >= 30


def test_wrong_items_and_counts_are_rejected(records):
    rng, tried = random.Random(3), 0
    outsiders = ["spaceship", "Atlantis", "unicorn", "robot"]
    for cat in ("brainstorming", "information_extraction", "general_qa"):
        for r in by_category(records)[cat][:80]:
            check = r["check"]
            if check["type"] != "slots":
                continue
            numbered = next(t for t in check["templates"] if t.startswith("1. "))
            values = fresh_values(check, numbered, rng)
            items = [values[n] for n in slot_names(numbered)]
            pool = next(iter(check["pools"].values()))
            fewer = "\n".join(f"{i + 1}. {x}" for i, x in enumerate(items[:-1]))
            extra = next((x for x in pool if x not in items), rng.choice(outsiders))
            more = "\n".join(f"{i + 1}. {x}" for i, x in enumerate([*items, extra]))
            repeated = render(numbered, {**values, slot_names(numbered)[-1]: items[0]})
            stranger = render(numbered, {**values, slot_names(numbered)[0]: rng.choice(outsiders)})
            for bad in (fewer, more, repeated, stranger):
                assert not is_valid(bad, check), (bad, check)
            tried += 1
    assert tried >= 60


def test_creative_writing_checks_topic_and_structure(records):
    rng = random.Random(4)
    for r in by_category(records)["creative_writing"][:60]:
        check = r["check"]
        assert not is_valid(r["response"].replace("\n", " ").rsplit(" ", 3)[0], check)  # truncated
        pools = check["pools"]
        pool = "a" if "a" in pools else "p"
        template = check["templates"][which_template(r)]
        values = fresh_values(check, template, rng)
        values[f"{pool}1"] = "purple" if pool == "a" else "moon"  # a word outside the topic's pool
        assert not is_valid(render(template, values), check)
        if check.get("require"):  # the asked-for word must be used
            unused = {p: [w for w in items if w not in check["require"]] for p, items in pools.items()}
            fill = {name: unused[name.rstrip("0123456789")].pop() for name in slot_names(template)}
            assert not is_valid(render(template, fill), check)


def test_odd_responses_never_raise(records):
    for r in records[:9]:
        for odd in ("", "   ", ".", "\n\n", "???", None, 17, "x" * 5000, "{x1}"):
            assert is_valid(odd, r["check"]) is False


def test_unknown_check_type_raises():
    with pytest.raises(MinillmError, match="unknown check type"):
        is_valid("yes", {"type": "regex", "pattern": "y"})
    with pytest.raises(MinillmError):
        is_valid("yes", {})


def test_label_words(records):
    labelled = [r for r in records if r["check"]["type"] == "label"]
    assert labelled and all(r["category"] == "classification" for r in labelled)
    for r in labelled[:50]:
        labels = label_words(r["check"])
        assert r["check"]["label"] in labels and len(set(labels)) == len(labels) >= 2
        for wrong in labels:
            if wrong != r["check"]["label"]:
                assert not is_valid(wrong, r["check"])
        assert is_valid(r["check"]["label"], r["check"])
    assert label_words(records[0]["check"]) is None
