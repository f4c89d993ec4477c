"""The embedded default data set: a procedurally generated, English, Dolly-style instruction set.

Why it exists: nothing can be downloaded, yet the default experiment must show what MiniLLM is
about. That needs (1) a teacher clearly better than what a tiny student can reach on its own (a
capacity gap) and (2) prompts with several valid answers, so that a capacity-limited student
trained with forward KL spreads its mass over modes and writes invalid hybrids. Both are built in:

* Knowledge. A fictional world is derived from the seed (12 countries, 48 cities, 72 people,
  about 560 facts: capitals, exports, rulers, founding years, jobs, birth places ...). ``open_qa``
  asks the facts without context, ``classification``, ``brainstorming`` and ``closed_qa`` use
  them too. A 1-3M-parameter teacher can memorise a few hundred facts with ~170 invented names; a
  0.1-0.3M student cannot. Every fact is asked through several phrasings, is stated in contexts
  and in :func:`world_text`, and open_qa cycles through all facts, so the facts are learnable from
  train; valid/test prompts never occur in train (held-out phrasing/fact combinations).
* Modes. Every open-ended category has several response templates with different word orders
  ("Two farm animals are the cow and the pig." / "The cow and the pig are farm animals." /
  "Cow and pig."), lists accept any valid items in any order, step lists any order allowed by a
  partial order, poems and stories several structures with free slots. The record's ``check``
  spec (see :mod:`minillm.data.checkers`) accepts every such answer and rejects hybrids, wrong
  facts and wrong counts.
* Size. About 1,350 distinct words of plain ASCII English in all (about 170 of them invented
  names), so a ~2000-token BPE tokenizer fits it; responses run from one word to about 85 (stories,
  step lists), most under 40.

Records: ``{"id", "category", "instruction", "context", "response", "check"}``. Record ``i`` of
the stream depends only on ``(seed, i)``, so ``generate_records(n, seed)`` is a prefix of
``generate_records(m, seed)`` for ``m > n`` and all share one world.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from minillm.errors import MinillmError

GENERATOR_VERSION = "bundled-1.0"

CATEGORIES: tuple[str, ...] = (
    "open_qa",
    "closed_qa",
    "classification",
    "information_extraction",
    "summarization",
    "brainstorming",
    "creative_writing",
    "general_qa",
)

# Category of stream record i is _CYCLE[i % len(_CYCLE)]: open_qa twice, because fact recall is
# where the capacity gap lives and each fact needs several exposures per epoch.
_CYCLE: tuple[str, ...] = CATEGORIES + ("open_qa",)

# Share of distinct prompts (by hash) reserved for valid/test; they never appear in train.
_HELD_OUT_PER_MILLE = 150

# ---------------------------------------------------------------------------------------------
# Word pools (plain English). Literal placeholders in templates are written <name>; {name} is
# reserved for checker slots (see checkers.py).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WordClass:
    """A class of everyday things: used by classification, brainstorming and general_qa."""

    label: str  # singular label word, e.g. "fruit"
    plural: str  # e.g. "fruits"
    countable: bool  # "a plum" versus "tea" / "red"
    items: tuple[str, ...]


def _w(text: str) -> tuple[str, ...]:
    """A word tuple from a space-separated string (keeps the pools compact and readable)."""
    return tuple(text.split())


WORD_CLASSES: tuple[WordClass, ...] = (
    WordClass(
        "fruit", "fruits", True, _w("apple pear plum peach cherry grape lemon banana mango melon lime fig")
    ),
    WordClass(
        "vegetable", "vegetables", True, _w("carrot onion potato cabbage pea bean leek turnip pumpkin radish")
    ),
    WordClass(
        "mammal", "mammals", True, _w("cow pig goat sheep horse donkey rabbit fox wolf bear deer mouse lion")
    ),
    WordClass(
        "bird", "birds", True, _w("hen duck goose owl eagle crow robin swan parrot sparrow hawk pigeon")
    ),
    WordClass("fish", "fish", True, _w("trout salmon cod carp tuna herring pike eel")),
    WordClass("tool", "tools", True, _w("hammer saw drill wrench chisel shovel rake axe screwdriver spade")),
    WordClass(
        "vehicle", "vehicles", True, _w("car bus truck bicycle train tram boat ship plane tractor van sled")
    ),
    WordClass(
        "instrument",
        "musical instruments",
        True,
        _w("piano violin drum flute guitar harp trumpet cello banjo"),
    ),
    WordClass("color", "colors", False, _w("red blue green yellow purple brown black white pink")),
    WordClass(
        "flower", "flowers", True, _w("rose tulip daisy lily poppy iris orchid daffodil sunflower lavender")
    ),
    WordClass("tree", "trees", True, _w("oak pine birch maple willow elm beech cedar spruce")),
    WordClass(
        "sport",
        "sports",
        False,
        _w("football tennis rowing swimming running cycling boxing skiing hockey golf"),
    ),
    WordClass("drink", "drinks", False, _w("tea coffee milk juice water cocoa lemonade cider")),
    WordClass(
        "piece of clothing",
        "pieces of clothing",
        True,
        _w("shirt coat hat scarf boot glove sock dress jacket"),
    ),
    WordClass(
        "piece of furniture", "pieces of furniture", True, _w("chair table bed sofa desk shelf stool bench")
    ),
)

JOBS = (
    "baker", "farmer", "teacher", "doctor", "sailor", "painter", "miner", "weaver", "builder", "potter",
    "carpenter", "fisher", "merchant", "nurse", "singer", "poet", "tailor", "blacksmith", "brewer", "judge",
    "cook", "gardener", "librarian", "mapmaker", "glassblower", "shepherd", "innkeeper", "clockmaker",
)  # fmt: skip
GOODS = (
    "wool", "salt", "copper", "tea", "rice", "timber", "cheese", "wine", "silk", "glass", "iron", "honey",
    "paper", "cotton", "olive oil", "marble", "amber", "spices", "furs", "tin",
)  # fmt: skip
CLIMATES = (
    "hot and dry", "cold and snowy", "warm and wet", "mild and rainy", "cool and windy", "hot and humid",
    "dry and sunny", "cold and foggy",
)  # fmt: skip
KNOWN_FOR = (
    "its stone bridges", "its fish market", "its old library", "its glass makers", "its rose gardens",
    "its clock tower", "its horse races", "its music festival", "its hot springs", "its paper mills",
    "its painted houses", "its busy harbour", "its great cathedral", "its cheese market", "its city walls",
    "its silver mines", "its apple orchards", "its old university", "its tall lighthouse", "its canals",
)  # fmt: skip
NATIONAL_ANIMALS = (
    "fox", "wolf", "bear", "deer", "lion", "horse", "eagle", "owl", "swan", "hawk", "goat", "crow", "otter",
    "badger", "stag", "lynx",
)  # fmt: skip
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}
SEASONS = ("spring", "summer", "autumn", "winter")

# --- fictional names ---------------------------------------------------------------------------
_ONSETS = (
    "b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
    "br", "dr", "gr", "kr", "st", "tr", "th", "sh", "bl", "fl", "pr",
)  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ei", "au")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "nd", "rn", "th")
_COUNTRY_ENDS = ("ia", "ora", "and", "una", "esh", "ovia", "ar", "ith")
_CITY_ENDS = ("ton", "holm", "ford", "wick", "mere", "dale", "gate", "stead", "haven", "bury")
_FAMILY_ENDS = ("by", "son", "well", "ley", "ard", "ick")

N_COUNTRIES = 12
CITIES_PER_COUNTRY = 4
PEOPLE_PER_COUNTRY = 6
N_FIRST_NAMES = 40


@dataclass(frozen=True)
class World:
    """The fictional world of one seed: entities and their facts.

    ``facts[relation][subject] = object``. Countries, cities and people are listed in
    generation order, so everything derived from them is deterministic.
    """

    countries: tuple[str, ...]
    cities: tuple[str, ...]
    people: tuple[str, ...]
    first_names: tuple[str, ...]
    pronoun: dict[str, str]
    facts: dict[str, dict[str, str]]

    def cities_of(self, country: str) -> list[str]:
        return [c for c in self.cities if self.facts["city_country"][c] == country]

    def fact_list(self) -> list[tuple[str, str, str]]:
        """All (relation, subject, object) triples, in a fixed order."""
        return [(rel, s, o) for rel in RELATIONS for s, o in self.facts[rel].items()]


def _syllable(rng: random.Random, coda: bool = True) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + (rng.choice(_CODAS) if coda else "")


def _names(rng: random.Random, n: int, make: Callable[[], str], taken: set[str]) -> list[str]:
    """``n`` distinct invented names not in ``taken`` (which is updated): names must never be
    ordinary words or each other, or a fact would be ambiguous."""
    out: list[str] = []
    while len(out) < n:
        name = make().capitalize()
        if name.lower() not in taken and 4 <= len(name) <= 11:
            taken.add(name.lower())
            out.append(name)
    return out


def _common_words() -> set[str]:
    """Every word of the module's word pools and templates (walked recursively), so that no
    invented name can be an ordinary word of the data."""
    words: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, str):
            words.update(re.findall(r"[a-z]+", value.lower()))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(key)
                walk(item)
        elif isinstance(value, tuple | list):
            for item in value:
                walk(item)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            walk(dataclasses.astuple(value))

    for name, value in globals().items():
        if name.isupper() or name.lstrip("_").isupper():
            walk(value)
    return words


@lru_cache(maxsize=8)
def build_world(seed: int = 0) -> World:
    """The world of ``seed`` (cached: every record of one seed shares it)."""
    rng = random.Random(f"minillm-bundled-world-{seed}")
    taken = _common_words()
    countries = _names(
        rng,
        N_COUNTRIES,
        lambda: _syllable(rng) + _syllable(rng, False)[:-1] + rng.choice(_COUNTRY_ENDS),
        taken,
    )
    cities = _names(
        rng, N_COUNTRIES * CITIES_PER_COUNTRY, lambda: _syllable(rng) + rng.choice(_CITY_ENDS), taken
    )
    firsts = _names(rng, N_FIRST_NAMES, lambda: _syllable(rng, False) + _syllable(rng), taken)
    n_people = N_COUNTRIES * PEOPLE_PER_COUNTRY
    families = _names(rng, n_people, lambda: _syllable(rng) + rng.choice(_FAMILY_ENDS), taken)
    facts: dict[str, dict[str, str]] = {rel: {} for rel in RELATIONS}
    animals = rng.sample(NATIONAL_ANIMALS, N_COUNTRIES)
    for i, country in enumerate(countries):
        own = cities[i * CITIES_PER_COUNTRY : (i + 1) * CITIES_PER_COUNTRY]
        for city in own:
            facts["city_country"][city] = country
            facts["founded"][city] = str(rng.randint(1050, 1850))
            facts["known_for"][city] = rng.choice(KNOWN_FOR)
        facts["capital"][country] = own[0]
        facts["export"][country] = rng.choice(GOODS)
        facts["animal"][country] = animals[i]
        facts["climate"][country] = rng.choice(CLIMATES)
    people: list[str] = []
    pronoun: dict[str, str] = {}
    for i, country in enumerate(countries):
        own = cities[i * CITIES_PER_COUNTRY : (i + 1) * CITIES_PER_COUNTRY]
        for j in range(PEOPLE_PER_COUNTRY):
            person = f"{rng.choice(firsts)} {families[i * PEOPLE_PER_COUNTRY + j]}"
            people.append(person)
            pronoun[person] = rng.choice(("he", "she"))
            home = rng.choice(own)
            born = rng.choice([c for c in (own if rng.random() < 0.7 else cities) if c != home])
            facts["job"][person] = rng.choice(JOBS)
            facts["born_year"][person] = str(rng.randint(1900, 1995))
            facts["born_city"][person] = born
            facts["home_city"][person] = home
            facts["born_country"][person] = facts["city_country"][born]
            if j == 0:
                facts["ruler"][country] = person
    return World(tuple(countries), tuple(cities), tuple(people), tuple(firsts), pronoun, facts)


# ---------------------------------------------------------------------------------------------
# Relations: question phrasings, answer templates (every one accepted) and context sentences.
# <s> subject, <o> object, <ao> object with its indefinite article.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    sentences: tuple[str, ...]  # statements for contexts and world_text ("" = not stated)


RELATIONS: dict[str, Relation] = {
    "capital": Relation(
        (
            "What is the capital of <s>?",
            "Which city is the capital of <s>?",
            "Name the capital of <s>.",
            "What is the capital city of <s>?",
            "Tell me the capital of <s>.",
            "Which city serves as the capital of <s>?",
        ),
        ("The capital of <s> is <o>.", "<o> is the capital of <s>.", "<o>.", "It is <o>."),
        ("The capital of <s> is <o>.", "<o> is the capital of <s>."),
    ),
    "export": Relation(
        (
            "What is the main export of <s>?",
            "What does <s> mainly export?",
            "Which good does <s> export the most?",
            "Name the chief export of <s>.",
            "What does <s> sell most to other countries?",
        ),
        ("The main export of <s> is <o>.", "<s> mainly exports <o>.", "<o>.", "It is <o>."),
        ("The main export of <s> is <o>.", "<s> sells a lot of <o> to other countries."),
    ),
    "animal": Relation(
        (
            "What is the national animal of <s>?",
            "Which animal is the symbol of <s>?",
            "What animal stands for <s>?",
            "Name the national animal of <s>.",
        ),
        (
            "The national animal of <s> is the <o>.",
            "The <o> is the national animal of <s>.",
            "The <o>.",
            "It is the <o>.",
        ),
        ("The national animal of <s> is the <o>.", "The <o> is the symbol of <s>."),
    ),
    "ruler": Relation(
        (
            "Who rules <s>?",
            "Who is the ruler of <s>?",
            "Who is the head of <s>?",
            "Name the ruler of <s>.",
            "Who governs <s>?",
        ),
        ("<o> rules <s>.", "The ruler of <s> is <o>.", "<o>.", "<s> is ruled by <o>."),
        ("<s> is ruled by <o>.", "The ruler of <s> is <o>."),
    ),
    "climate": Relation(
        (
            "What is the climate of <s> like?",
            "What is the weather usually like in <s>?",
            "How would you describe the climate of <s>?",
            "What kind of climate does <s> have?",
        ),
        ("The climate of <s> is <o>.", "<s> has a <o> climate.", "It is <o>.", "<o>."),
        ("The climate of <s> is <o>.", "<s> has a <o> climate."),
    ),
    "city_country": Relation(
        (
            "In which country is <s>?",
            "Which country is <s> in?",
            "Where is <s>?",
            "<s> is a city in which country?",
            "To which country does <s> belong?",
        ),
        ("<s> is in <o>.", "<s> is a city in <o>.", "It is in <o>.", "<o>."),
        ("<s> is a city in <o>.", "<s> lies in <o>."),
    ),
    "founded": Relation(
        (
            "When was <s> founded?",
            "In what year was <s> founded?",
            "What year was the city of <s> founded?",
            "In which year was <s> built?",
        ),
        ("<s> was founded in <o>.", "It was founded in <o>.", "In <o>.", "<o>."),
        ("<s> was founded in <o>.", "The city of <s> was built in <o>."),
    ),
    "known_for": Relation(
        (
            "What is <s> known for?",
            "What is <s> famous for?",
            "What is the city of <s> best known for?",
            "Why is <s> famous?",
        ),
        ("<s> is known for <o>.", "It is famous for <o>.", "<o>.", "<s> is famous for <o>."),
        ("<s> is known for <o>.", "Visitors come to <s> for <o>."),
    ),
    "job": Relation(
        (
            "What does <s> do for a living?",
            "What is the job of <s>?",
            "What is <s>'s job?",
            "What work does <s> do?",
            "What is the occupation of <s>?",
        ),
        ("<s> is <ao>.", "<s> works as <ao>.", "<ao>.", "<s> is <ao> by trade."),
        ("<s> is <ao>.", "<s> works as <ao>."),
    ),
    "born_year": Relation(
        (
            "When was <s> born?",
            "In what year was <s> born?",
            "What is the birth year of <s>?",
            "Which year was <s> born in?",
        ),
        ("<s> was born in <o>.", "In <o>.", "<o>.", "<s> was born in the year <o>."),
        ("<s> was born in <o>.",),
    ),
    "born_city": Relation(
        (
            "Where was <s> born?",
            "In which city was <s> born?",
            "What is the birthplace of <s>?",
            "What is the home town of <s>?",
        ),
        ("<s> was born in <o>.", "In <o>.", "<o>.", "<o> is the birthplace of <s>."),
        ("<s> was born in the city of <o>.", "<s> was born in <o>."),
    ),
    "home_city": Relation(
        (
            "Where does <s> live?",
            "In which city does <s> live?",
            "What city is <s> living in?",
            "Where is the home of <s>?",
        ),
        ("<s> lives in <o>.", "In <o>.", "<o>.", "<s> lives in the city of <o>."),
        ("<s> lives in <o>.", "<s> now lives in <o>."),
    ),
    "born_country": Relation(
        (
            "In which country was <s> born?",
            "What country was <s> born in?",
            "What is the home country of <s>?",
            "Which country does <s> come from?",
        ),
        ("<s> was born in <o>.", "<s> comes from <o>.", "<o>.", "In <o>."),
        ("",),  # derived from born_city + city_country: never stated, must be composed
    ),
}

# ---------------------------------------------------------------------------------------------
# Small text helpers
# ---------------------------------------------------------------------------------------------

_SENTENCE_START = re.compile(r"(^|[.!?]\s+|\n)([a-z])")


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _sub(text: str, **values: str) -> str:
    """Fill literal ``<name>`` placeholders (checker slots ``{name}`` are left alone)."""
    for key, value in values.items():
        text = text.replace(f"<{key}>", value)
    return text


def _sentence_case(text: str) -> str:
    """Capitalise the first letter of every sentence and line (cosmetic: checkers ignore case)."""
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)


def _fill(template: str, values: dict[str, str]) -> str:
    """Render a checker template with concrete slot values."""
    return _sentence_case(re.sub(r"\{([a-z]+\d*)\}", lambda m: values[m.group(1)], template))


def _join(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _exact(answers: list[str]) -> dict:
    return {"type": "exact", "answers": list(dict.fromkeys(answers))}


def _slots(templates: list[str], pools: dict[str, list[str]], **extra: list) -> dict:
    spec: dict = {"type": "slots", "templates": list(dict.fromkeys(templates)), "pools": pools}
    spec.update({k: v for k, v in extra.items() if v})
    return spec


def _fact_answers(relation: str, subject: str, obj: str) -> list[str]:
    return [_sentence_case(_sub(a, s=subject, o=obj, ao=_article(obj))) for a in RELATIONS[relation].answers]


def _fact_sentence(relation: str, subject: str, obj: str, rng: random.Random) -> str:
    return _sentence_case(_sub(rng.choice(RELATIONS[relation].sentences), s=subject, o=obj, ao=_article(obj)))


# A builder returns (instruction, context, response, check).
Built = tuple[str, str, str, dict]

# ---------------------------------------------------------------------------------------------
# open_qa: facts of the world, no context
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _fact_order(seed: int) -> tuple[tuple[str, str, str], ...]:
    facts = build_world(seed).fact_list()
    random.Random(f"minillm-bundled-facts-{seed}").shuffle(facts)
    return tuple(facts)


def _open_qa(world: World, rng: random.Random, k: int, seed: int) -> Built:
    """The k-th open_qa record asks fact k (cycling), so every fact recurs evenly in train."""
    order = _fact_order(seed)
    relation, subject, obj = order[k % len(order)]
    question = _sub(rng.choice(RELATIONS[relation].questions), s=subject)
    answers = _fact_answers(relation, subject, obj)
    return question, "", rng.choice(answers), _exact(answers)


# ---------------------------------------------------------------------------------------------
# closed_qa: a paragraph plus a question answerable from it
# ---------------------------------------------------------------------------------------------

_READING_PREFIXES = ("", "According to the text, ", "Based on the passage, ", "Using the text, answer: ")
_SUBJECT_RELATIONS = {
    "country": ("capital", "export", "animal", "ruler", "climate"),
    "city": ("city_country", "founded", "known_for"),
    "person": ("job", "born_year", "born_city", "home_city"),
}


def _entity_paragraph(world: World, rng: random.Random, kind: str, subject: str) -> list[tuple[str, str]]:
    rels = list(_SUBJECT_RELATIONS[kind])
    rng.shuffle(rels)
    rels = rels[: rng.randint(3, len(rels))]
    return [(rel, _fact_sentence(rel, subject, world.facts[rel][subject], rng)) for rel in rels]


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:1].isupper() and not text[1:2].isupper() else text


def _closed_qa(world: World, rng: random.Random, k: int, seed: int) -> Built:
    """Half entity paragraphs (facts agree with the world, sometimes with a distractor entity),
    half event paragraphs (new combinations that must be read, not remembered)."""
    if rng.random() < 0.5:
        return _event_question(world, rng)
    kind = rng.choice(("country", "city", "person"))
    pool = {"country": world.countries, "city": world.cities, "person": world.people}[kind]
    subject, other = rng.sample(pool, 2)
    stated = _entity_paragraph(world, rng, kind, subject)
    sentences = [s for _, s in stated]
    if rng.random() < 0.4:
        sentences += [s for _, s in _entity_paragraph(world, rng, kind, other)[:2]]
        rng.shuffle(sentences)
    relation = rng.choice([rel for rel, _ in stated])
    question = _sub(rng.choice(RELATIONS[relation].questions), s=subject)
    prefix = rng.choice(_READING_PREFIXES)
    instruction = prefix + (_lower_first(question) if prefix else question)
    answers = _fact_answers(relation, subject, world.facts[relation][subject])
    return instruction, " ".join(sentences), rng.choice(answers), _exact(answers)


# --- events (shared by closed_qa and summarization) ---------------------------------------------

EVENTS = (
    ("opened a new bakery", "open a new bakery"),
    ("won the great boat race", "win the great boat race"),
    ("built a stone bridge over the river", "build a stone bridge over the river"),
    ("found an old map in the library", "find an old map in the library"),
    ("planted a large garden by the harbour", "plant a large garden by the harbour"),
    ("wrote a book about the sea", "write a book about the sea"),
    ("painted a huge picture on the town hall", "paint a huge picture on the town hall"),
    ("started a school for young children", "start a school for young children"),
    ("rescued a child from the cold river", "rescue a child from the cold river"),
    ("repaired the old clock tower", "repair the old clock tower"),
    ("sang at the great music festival", "sing at the great music festival"),
    ("grew the biggest pumpkin in the country", "grow the biggest pumpkin in the country"),
    ("made a new kind of glass", "make a new kind of glass"),
    ("walked all the way to the capital", "walk all the way to the capital"),
)
OUTCOMES = (
    "many people now come to visit",
    "the whole town held a party",
    "the story was in every newspaper",
    "the mayor thanked everyone in a speech",
    "the children of the town were very happy",
    "the family became well known",
    "a song was written about it",
    "the town gave a small prize",
    "more people moved to the town",
    "everyone still talks about that day",
)
_DETAILS = (
    "The weather was <w> that day.",
    "A crowd of about <n> people came to watch.",
    "It took <d> of hard work.",
    "<P> had help from a friend, <ao2> named <p2>.",
    "Nobody in the town had seen anything like it before.",
    "Some neighbours did not believe it at first.",
)
_WEATHER = ("cold", "warm", "sunny", "windy", "grey", "wet")
_CROWDS = ("fifty", "one hundred", "two hundred", "five hundred", "a thousand")
_DURATIONS = ("three weeks", "two months", "a whole year", "many days", "four months")


@dataclass(frozen=True)
class _Event:
    person: str
    pronoun: str
    job: str
    city: str
    season: str
    event: tuple[str, str]
    outcome: str
    details: tuple[str, ...]


def _make_event(world: World, rng: random.Random) -> _Event:
    person, helper = rng.sample(world.people, 2)
    pron = world.pronoun[person]
    details = []
    for template in rng.sample(_DETAILS, rng.randint(1, 2)):
        details.append(
            _sub(
                template,
                w=rng.choice(_WEATHER),
                n=rng.choice(_CROWDS),
                d=rng.choice(_DURATIONS),
                P=pron.capitalize(),
                ao2=_article(rng.choice(JOBS)),
                p2=helper,
            )
        )
    return _Event(
        person=person,
        pronoun=pron,
        job=rng.choice(JOBS),
        city=rng.choice(world.cities),
        season=rng.choice(SEASONS),
        event=rng.choice(EVENTS),
        outcome=rng.choice(OUTCOMES),
        details=tuple(details),
    )


def _event_context(ev: _Event, rng: random.Random) -> str:
    intro = rng.choice(
        ("<p> is <aj> who lives in <c>.", "<p> works as <aj> in <c>.", "In <c> there lives <aj> named <p>.")
    )
    action = rng.choice(
        ("Last <season>, <pr> <ev>.", "In the <season>, <pr> <ev>.", "One <season> day, <pr> <ev>.")
    )
    result = rng.choice(("Because of this, <out>.", "After that, <out>.", "As a result, <out>."))
    middle = list(ev.details)
    sentences = [intro, action] + middle + [result]
    text = " ".join(sentences)
    return _sentence_case(
        _sub(text, p=ev.person, aj=_article(ev.job), c=ev.city, season=ev.season, pr=ev.pronoun, ev=ev.event[0],
             out=ev.outcome)
    )  # fmt: skip


def _event_question(world: World, rng: random.Random) -> Built:
    ev = _make_event(world, rng)
    context = _event_context(ev, rng)
    kind = rng.choice(("who", "job", "city", "season", "what"))
    p, j, c = ev.person, ev.job, ev.city
    if kind == "who":
        question = rng.choice(("Who <ev>?", "Which person <ev>?"))
        answers = [f"{p}.", f"{p} did.", f"{p} {ev.event[0]}.", f"It was {p}."]
    elif kind == "job":
        question = rng.choice(
            ("What does <p> do for a living?", "What is the job of <p>?", "What work does <p> do?")
        )
        answers = [
            f"{p} is {_article(j)}.",
            f"{p} works as {_article(j)}.",
            f"{_article(j)}.",
            f"{p} is {_article(j)} by trade.",
        ]
    elif kind == "city":
        question = rng.choice(
            ("In which city does <p> live?", "Where does <p> live?", "Where does the story take place?")
        )
        answers = [f"{p} lives in {c}.", f"In {c}.", f"{c}.", f"{p} lives in the city of {c}."]
    elif kind == "season":
        question = rng.choice(("In which season did <p> <evb>?", "When did <p> <evb>?"))
        answers = [
            f"In the {ev.season}.",
            f"{ev.season}.",
            f"{p} did it in the {ev.season}.",
            f"It happened in the {ev.season}.",
        ]
    else:
        question = rng.choice(("What did <p> do?", "What did <p> do in <c>?", "What did <p> achieve?"))
        answers = [
            f"{p} {ev.event[0]}.",
            f"{ev.event[0]}.",
            f"{ev.pronoun} {ev.event[0]}.",
            f"In {c}, {p} {ev.event[0]}.",
        ]
    answers = [_sentence_case(a) for a in answers]
    prefix = rng.choice(_READING_PREFIXES)
    question = _sub(question, ev=ev.event[0], evb=ev.event[1], p=p, c=c)
    instruction = prefix + (_lower_first(question) if prefix else question)
    return instruction, context, rng.choice(answers), _exact(answers)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# classification: fixed label words (also used for calibration)
# ---------------------------------------------------------------------------------------------

_POSITIVE = ("great", "lovely", "wonderful", "excellent", "pleasant", "delightful", "superb", "friendly")
_NEGATIVE = ("awful", "terrible", "boring", "dreadful", "poor", "disappointing", "horrible", "rude")
_REVIEW_SUBJECTS = (
    "soup", "room", "service", "film", "book", "concert", "bus ride", "hotel", "bread", "game", "staff",
    "music", "food", "view", "trip", "show",
)  # fmt: skip
_REVIEW_ENDS_POS = (
    "I would come back again.",
    "I will tell my friends about it.",
    "It was worth every coin.",
)
_REVIEW_ENDS_NEG = ("I will not come back.", "I want my money back.", "It was a waste of time.")


def _classification(world: World, rng: random.Random, k: int, seed: int) -> Built:
    roll = rng.random()
    if roll < 0.5:
        return _classify_thing(rng)
    if roll < 0.75:
        return _classify_review(rng)
    return _classify_world(world, rng)


def _label_spec(labels: list[str], label: str, answers: list[str]) -> dict:
    return {"type": "label", "labels": labels, "label": label, "answers": list(dict.fromkeys(answers))}


def _or_list(options: list[str]) -> str:
    return options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]


def _classify_thing(rng: random.Random) -> Built:
    gold, *others = rng.sample(WORD_CLASSES, rng.choice((2, 2, 3, 4)))
    item = rng.choice(gold.items)
    classes = [gold, *others]
    rng.shuffle(classes)
    labels = [c.label for c in classes]
    thing = _article(item) if gold.countable else item
    options = _or_list([_article(c.label) for c in classes])
    instruction = rng.choice(
        (
            f"Is {thing} {options}?",
            f"Classify {thing} as {options}.",
            f"Which is {thing}: {options}?",
            f"Tell me whether {thing} is {options}.",
        )
    )
    answers = [
        f"{gold.label}.",
        f"{thing} is {_article(gold.label)}.",
        f"It is {_article(gold.label)}.",
        f"The answer is {gold.label}.",
    ]
    answers = [_sentence_case(a) for a in answers]
    return instruction, "", rng.choice(answers), _label_spec(labels, gold.label, answers)  # fmt: skip


def _classify_review(rng: random.Random) -> Built:
    positive = rng.random() < 0.5
    adjectives = _POSITIVE if positive else _NEGATIVE
    s1, s2 = rng.sample(_REVIEW_SUBJECTS, 2)
    a1, a2 = rng.sample(adjectives, 2)
    ending = rng.choice(_REVIEW_ENDS_POS if positive else _REVIEW_ENDS_NEG)
    review = _sentence_case(f"the {s1} was {a1} and the {s2} was {a2}. {ending}")
    labels = ["positive", "negative"]
    rng.shuffle(labels)
    label = "positive" if positive else "negative"
    instruction = rng.choice(
        (
            f"Is this review {labels[0]} or {labels[1]}?",
            f"Classify the sentiment of the review as {labels[0]} or {labels[1]}.",
            f"Is the following review {labels[0]} or {labels[1]}?",
        )
    )
    answers = [f"{label}.", f"The review is {label}.", f"It is {label}.", f"This review is {label}."]
    answers = [_sentence_case(a) for a in answers]
    return instruction, review, rng.choice(answers), _label_spec(labels, label, answers)


def _classify_world(world: World, rng: random.Random) -> Built:
    """World-knowledge classification: which country a city lies in, or what kind of name it is."""
    if rng.random() < 0.5:
        city = rng.choice(world.cities)
        gold = world.facts["city_country"][city]
        labels = [gold, *rng.sample([c for c in world.countries if c != gold], rng.choice((1, 1, 2)))]
        rng.shuffle(labels)
        instruction = rng.choice(
            (
                f"Is {city} in {_or_list(labels)}?",
                f"Which country is {city} in: {_or_list(labels)}?",
                f"Classify the city {city} by country: {_or_list(labels)}.",
            )
        )
        answers = [f"{city} is in {gold}.", f"It is in {gold}.", f"{gold}.", f"In {gold}."]
        return instruction, "", rng.choice(answers), _label_spec(labels, gold, answers)
    kind = rng.choice(("person", "city", "country"))
    name = rng.choice({"person": world.people, "city": world.cities, "country": world.countries}[kind])
    labels = ["person", "city", "country"]
    rng.shuffle(labels)
    instruction = rng.choice(
        (
            f"Is {name} {_or_list([_article(x) for x in labels])}?",
            f"Classify {name} as {_or_list([_article(x) for x in labels])}.",
        )
    )
    answers = [
        f"{kind}.",
        f"{name} is {_article(kind)}.",
        f"It is {_article(kind)}.",
        f"The answer is {kind}.",
    ]
    answers = [_sentence_case(a) for a in answers]
    return instruction, "", rng.choice(answers), _label_spec(labels, kind, answers)


# ---------------------------------------------------------------------------------------------
# information_extraction: pull years, places, jobs out of a biography
# ---------------------------------------------------------------------------------------------

_LIST_TEMPLATES = (
    "<list>.",
    "The <what> are <list>.",
    "The text mentions <list>.",
    "<numbered>",
)


def _slot_list(pool: str, n: int) -> str:
    return _join([f"{{{pool}{i + 1}}}" for i in range(n)])


def _numbered(pool: str, n: int) -> str:
    return "\n".join(f"{i + 1}. {{{pool}{i + 1}}}" for i in range(n))


def _biography(world: World, rng: random.Random, person: str) -> tuple[str, list[str], list[str]]:
    """A short biography consistent with the world, plus extra events; returns the text, the
    cities and the years it mentions (each once, in order of appearance)."""
    f = world.facts
    pron = world.pronoun[person].capitalize()
    born, home, year = f["born_city"][person], f["home_city"][person], int(f["born_year"][person])
    moved = year + rng.randint(18, 35)
    third = rng.choice([c for c in world.cities if c not in (born, home)])
    visit = moved + rng.randint(2, 20)
    sentences = [
        rng.choice(
            (
                f"{person} was born in {born} in {year}.",
                f"Born in {year} in {born}, {person} grew up by the sea.",
            )
        ),
        rng.choice(
            (
                f"{pron} trained as {_article(f['job'][person])}.",
                f"{pron} became {_article(f['job'][person])} when young.",
            )
        ),
        rng.choice((f"In {moved}, {pron.lower()} moved to {home}.", f"{pron} moved to {home} in {moved}.")),
        rng.choice(
            (f"In {visit}, {pron.lower()} spent a summer in {third}.", f"{pron} visited {third} in {visit}.")
        ),
    ]
    return " ".join(sentences), [born, home, third], [str(year), str(moved), str(visit)]  # fmt: skip


def _information_extraction(world: World, rng: random.Random, k: int, seed: int) -> Built:
    person = rng.choice(world.people)
    context, cities, years = _biography(world, rng, person)
    kind = rng.choice(("cities", "years", "birth_year", "job", "name_job"))
    if kind in ("cities", "years"):
        values = cities if kind == "cities" else years
        what = "cities" if kind == "cities" else "years"
        instruction = rng.choice(
            (
                f"List all the {what} mentioned in the text.",
                f"Extract the {what} from the passage.",
                f"Which {what} are named in the text?",
                f"Find every {'city' if kind == 'cities' else 'year'} in this biography.",
            )
        )
        n = len(values)
        templates = [
            _sub(t, list=_slot_list("x", n), what=what, numbered=_numbered("x", n)) for t in _LIST_TEMPLATES
        ]
        check = _slots(templates, {"x": values}, all=["x"])
        order = rng.sample(values, n)
        response = _fill(rng.choice(templates), {f"x{i + 1}": v for i, v in enumerate(order)})
        return instruction, context, response, check
    f = world.facts
    job, year = f["job"][person], f["born_year"][person]
    if kind == "birth_year":
        instruction = rng.choice(
            (
                "Extract the year of birth from the text.",
                "In which year was the person born, according to the text?",
            )
        )
        answers = [f"{year}.", f"{person} was born in {year}.", f"The birth year is {year}.", f"In {year}."]
    elif kind == "job":
        instruction = rng.choice(
            ("Extract the job of the person from the text.", "What job does the text mention?")
        )
        answers = [
            f"{job}.",
            f"{person} is {_article(job)}.",
            f"{person} works as {_article(job)}.",
            f"The job is {job}.",
        ]
    else:
        instruction = rng.choice(
            (
                "Extract the name and the job of the person in the form name: job.",
                "Give the name of the person and the job, as name: job.",
            )
        )
        answers = [f"{person}: {job}"]
    answers = [_sentence_case(a) for a in answers]
    return instruction, context, rng.choice(answers), _exact(answers)


# ---------------------------------------------------------------------------------------------
# summarization: one or two sentences, several templates
# ---------------------------------------------------------------------------------------------

_ONE_SENTENCE = (
    "<p>, <aj> from <c>, <ev>, and <out>.",
    "<p> <ev> in <c>, and <out>.",
    "In <c>, <aj> named <p> <ev>, and <out>.",
    "The text is about how <p> <ev> in <c> and <out>.",
)
_TWO_SENTENCES = (
    "<p> is <aj> in <c>. <PR> <ev>, and <out>.",
    "Last <season>, <p> <ev> in <c>. Because of this, <out>.",
    "In <c>, <aj> named <p> <ev>. As a result, <out>.",
)


def _summarization(world: World, rng: random.Random, k: int, seed: int) -> Built:
    ev = _make_event(world, rng)
    context = _event_context(ev, rng)
    if rng.random() < 0.6:
        templates = _ONE_SENTENCE
        instruction = rng.choice(
            (
                "Summarize the text in one sentence.",
                "Give a one sentence summary of the passage.",
                "What is this text about? Answer in one sentence.",
                "Sum up the passage in a single sentence.",
            )
        )
    else:
        templates = _TWO_SENTENCES
        instruction = rng.choice(
            ("Summarize the text in two sentences.", "Give a two sentence summary of the passage.")
        )
    values = dict(
        p=ev.person, aj=_article(ev.job), c=ev.city, ev=ev.event[0], out=ev.outcome, season=ev.season
    )
    answers = [_sentence_case(_sub(t, PR=ev.pronoun.capitalize(), **values)) for t in templates]
    return instruction, context, rng.choice(answers), _exact(answers)


# ---------------------------------------------------------------------------------------------
# brainstorming: N distinct items from a set, any order, several templates
# ---------------------------------------------------------------------------------------------

_BRAINSTORM_PROMPTS = (
    "Name <n> <things><except>.",
    "List <n> <things><except>.",
    "Give me <n> <things><except>.",
    "Can you name <n> <things><except>?",
    "What are <n> <things><except>?",
    "Brainstorm <n> <things><except>.",
)


def _brainstorm_templates(n: int, things: str, det: str) -> list[str]:
    """Templates with different word orders; ``det`` ("the " or "") goes before items in
    sentence forms, never in the bare list."""
    bare = _slot_list("x", n)
    with_det = _join([f"{det}{{x{i + 1}}}" for i in range(n)])
    number = NUMBER_WORDS[n]
    return [
        f"{bare}.",
        f"{number} {things} are {with_det}.",
        f"{with_det} are {things}.",
        f"Here are {number} {things}: {bare}.",
        _numbered("x", n),
    ]


def _brainstorming(world: World, rng: random.Random, k: int, seed: int) -> Built:
    if rng.random() < 0.2:
        country = rng.choice(world.countries)
        pool, things, det, n = world.cities_of(country), f"cities in {country}", "", rng.choice((2, 3))
    else:
        wc = rng.choice(WORD_CLASSES)
        pool, things, det, n = (
            list(wc.items),
            wc.plural,
            "the " if wc.countable else "",
            rng.choice((2, 3, 3, 4, 5)),
        )
    exclude = ""
    if rng.random() < 0.5 and len(pool) > n + 2:
        banned = rng.choice(pool)
        pool = [x for x in pool if x != banned]
        exclude = f" other than {det}{banned}"
    instruction = _sub(
        rng.choice(_BRAINSTORM_PROMPTS), n=NUMBER_WORDS[n], things=things, **{"except": exclude}
    )
    templates = _brainstorm_templates(n, things, det)
    chosen = rng.sample(pool, n)
    response = _fill(rng.choice(templates), {f"x{i + 1}": v for i, v in enumerate(chosen)})
    return instruction, "", response, _slots(templates, {"x": pool})


# ---------------------------------------------------------------------------------------------
# creative_writing: poems and stories, several structures, free slots
# ---------------------------------------------------------------------------------------------

POEM_TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "the sea": (("wide", "deep", "blue", "cold", "wild", "calm", "grey", "loud"),
                ("waves", "ships", "gulls", "fish", "whales", "shells", "boats", "rocks")),
    "the moon": (("pale", "bright", "round", "silver", "quiet", "lonely", "white", "soft"),
                 ("stars", "clouds", "owls", "trees", "hills", "roofs", "lakes", "shadows")),
    "the rain": (("soft", "cold", "grey", "steady", "gentle", "heavy", "quiet", "cool"),
                 ("clouds", "puddles", "roofs", "leaves", "streets", "flowers", "windows", "drops")),
    "the forest": (("green", "dark", "old", "deep", "quiet", "tall", "wild", "cool"),
                   ("trees", "birds", "deer", "leaves", "ferns", "paths", "foxes", "streams")),
    "winter": (("cold", "white", "long", "quiet", "dark", "harsh", "still", "bitter"),
               ("fires", "boots", "trees", "hills", "nights", "stars", "sleds", "owls")),
    "summer": (("warm", "bright", "long", "golden", "lazy", "sunny", "sweet", "green"),
               ("fields", "bees", "flowers", "days", "rivers", "birds", "fruits", "skies")),
    "autumn": (("golden", "brown", "crisp", "cool", "red", "misty", "soft", "late"),
               ("leaves", "apples", "winds", "fields", "trees", "geese", "pumpkins", "mornings")),
    "spring": (("fresh", "green", "young", "bright", "soft", "sweet", "warm", "new"),
               ("buds", "lambs", "flowers", "birds", "rains", "meadows", "blossoms", "streams")),
    "the river": (("long", "fast", "cold", "clear", "wide", "deep", "slow", "bright"),
                  ("stones", "fish", "boats", "bridges", "reeds", "ducks", "banks", "mills")),
    "the mountains": (("high", "cold", "proud", "steep", "old", "grey", "white", "still"),
                      ("peaks", "goats", "clouds", "streams", "rocks", "eagles", "paths", "pines")),
    "the night": (("dark", "long", "quiet", "still", "deep", "black", "cool", "calm"),
                  ("stars", "owls", "dreams", "shadows", "lamps", "moths", "cats", "clouds")),
    "the wind": (("strong", "cold", "wild", "soft", "loud", "fast", "free", "sharp"),
                 ("leaves", "kites", "sails", "clouds", "waves", "trees", "flags", "birds")),
    "the garden": (("green", "small", "sweet", "bright", "quiet", "busy", "old", "lovely"),
                   ("roses", "bees", "paths", "herbs", "birds", "trees", "beans", "gates")),
    "the city": (("busy", "loud", "bright", "old", "tall", "crowded", "grey", "proud"),
                 ("streets", "trains", "lights", "towers", "shops", "crowds", "buses", "bells")),
    "the morning": (("fresh", "bright", "cool", "early", "golden", "quiet", "clear", "new"),
                    ("birds", "bells", "roads", "fields", "clouds", "larks", "gates", "hills")),
    "the storm": (("wild", "dark", "loud", "fierce", "cold", "heavy", "strong", "angry"),
                  ("clouds", "waves", "trees", "ships", "roofs", "winds", "gulls", "boats")),
}  # fmt: skip

_POEMS = (
    "<t> is {a1} and <t> is {a2},\nthe {n1} are close to me.\nI watch the {n2} all day long,\nas happy as can be.",
    "<t>, so {a1}, so {a2},\nyou call the {n1} home.\nThe {n2} and the {n3} wait for you,\nwherever I may roam.",
    "I walked beside <t> today,\nthe {n1} were {a1}, the {n2} were {a2}.\nI will come back another day,\nwhen all the {n3} are {a3}.",
    "{a1} {n1} and {a2} {n2},\n<t> has a song to sing.\nIt is {a3} in every season,\nand the {n3} hear it ring.",
)
_POEM_PROMPTS = (
    "Write a short poem about <t>.",
    "Write four lines of verse about <t>.",
    "Compose a little poem about <t>.",
    "Can you write a poem about <t>?",
)

STORY_GOALS = (
    "climb the tallest hill", "cross the wide river", "find the lost golden key", "learn to sing",
    "build a warm house", "see the sea", "make a new friend", "win the big race", "catch a falling star",
    "bake a giant cake", "fly over the mountains", "find the end of the rainbow",
)  # fmt: skip
STORY_HEROES = _w("fox rabbit mouse goat duck pig bear owl hen deer donkey swan")
STORY_HELPERS = _w("owl mouse bear goat duck rabbit crow deer badger otter horse")
STORY_PLACES = ("forest", "river", "hill", "old barn", "village", "lake", "meadow", "farm")
FEELINGS = ("happy", "proud", "glad", "thankful", "joyful")

_STORIES = (
    "Once upon a time there was <ah> named <N>. <N> lived near the {p1} and wanted to <goal>. Every day <N> "
    "tried, but it was too hard. One morning a kind {h1} came by and offered to help. Together they worked "
    "from dawn until dusk. At last <N> was able to <goal>. <N> felt {f1} and thanked the {h1}. From that day "
    "on, the two of them were the best of friends.",
    "<N> the <hero> had one dream: to <goal>. Everyone near the {p1} said it could not be done. But <N> did "
    "not give up, and practised in the rain and in the sun. One day an old {h1} shared a clever idea. <N> "
    "listened carefully and tried once more. This time it worked, and <N> was able to <goal>. The {h1} "
    "smiled, and <N> felt {f1} all evening.",
    "In a small home by the {p1} lived <ah> called <N>. More than anything, <N> wanted to <goal>. The first "
    "try failed, and so did the second. Then <N> met a {h1} who knew the way. The {h1} showed <N> what to do, "
    "step by step. After many days of work, <N> was finally able to <goal>. That night <N> felt {f1} and "
    "could not stop smiling.",
)
_STORY_PROMPTS = (
    "Write a short story about <ah> named <N> who wants to <goal>.",
    "Tell me a story about <ah> called <N> who wants to <goal>.",
    "Write a children's story about <N> the <hero>, who wants to <goal>.",
)


def _creative_writing(world: World, rng: random.Random, k: int, seed: int) -> Built:
    if rng.random() < 0.5:
        return _poem(rng)
    return _story(world, rng)


def _poem(rng: random.Random) -> Built:
    topic = rng.choice(list(POEM_TOPICS))
    adjectives, nouns = POEM_TOPICS[topic]
    instruction = _sub(rng.choice(_POEM_PROMPTS), t=topic)
    templates = [_sub(p, t=topic) for p in _POEMS]
    template = rng.choice(templates)
    values = dict(zip(("a1", "a2", "a3"), rng.sample(adjectives, 3), strict=True))
    values.update(zip(("n1", "n2", "n3"), rng.sample(nouns, 3), strict=True))
    require: list[str] = []
    if rng.random() < 0.5:
        # "that uses the word X": pick X among the words this poem fills in, so the reference obeys it.
        used = [v for key, v in values.items() if f"{{{key}}}" in template]
        word = rng.choice(used)
        require = [word]
        instruction = instruction[:-1] + f" that uses the word {word}" + instruction[-1]
    check = _slots(templates, {"a": list(adjectives), "n": list(nouns)}, require=require)
    return instruction, "", _fill(template, values), check


def _story(world: World, rng: random.Random) -> Built:
    hero = rng.choice(STORY_HEROES)
    name = rng.choice(world.first_names)
    goal = rng.choice(STORY_GOALS)
    literal = dict(ah=_article(hero), N=name, goal=goal, hero=hero)
    instruction = _sub(rng.choice(_STORY_PROMPTS), **literal)
    templates = [_sub(s, **literal) for s in _STORIES]
    helpers = [h for h in STORY_HELPERS if h != hero]
    pools = {"p": list(STORY_PLACES), "h": helpers, "f": list(FEELINGS)}
    values = {"p1": rng.choice(STORY_PLACES), "h1": rng.choice(helpers), "f1": rng.choice(FEELINGS)}
    return instruction, "", _fill(rng.choice(templates), values), _slots(templates, pools)


# ---------------------------------------------------------------------------------------------
# general_qa: how-to step lists (partial order), comparisons, why-questions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """A how-to task: ``<p>`` in the title and steps is a parameter; ``before`` holds step index
    pairs (i, j) meaning step i must come before step j. Other orders are all valid."""

    title: str  # infinitive phrase, e.g. "make <p> soup"
    params: tuple[str, ...]
    steps: tuple[str, ...]
    before: tuple[tuple[int, int], ...]


TASKS: tuple[Task, ...] = (
    Task("make a cup of <p>", ("tea", "mint tea", "herbal tea"),
         ("boil some water", "put a tea bag in a cup", "pour the hot water into the cup", "wait for three minutes",
          "take the tea bag out", "add milk or honey if you like"),
         ((0, 2), (1, 2), (2, 3), (3, 4), (2, 5))),
    Task("plant <p> tree", ("an oak", "a pine", "a birch", "a maple", "an apple", "a cherry", "a willow"),
         ("choose a sunny spot", "dig a deep hole", "put the young tree in the hole", "fill the hole with soil",
          "press the soil down firmly", "water the tree well"),
         ((0, 1), (1, 2), (2, 3), (3, 4), (3, 5))),
    Task("make <p> soup", ("carrot", "onion", "potato", "pumpkin", "pea", "leek", "bean", "cabbage"),
         ("wash and cut the vegetables", "heat some oil in a pot", "fry the vegetables in the oil",
          "add water and a little salt", "let the soup boil for twenty minutes", "blend the soup until smooth"),
         ((0, 2), (1, 2), (2, 3), (3, 4), (4, 5))),
    Task("wash <p>", ("a car", "a bicycle", "a van", "a truck", "a tractor"),
         ("fill a bucket with soapy water", "rinse off the dust with a hose", "scrub every part with a sponge",
          "rinse off the soap", "dry it with a soft cloth"),
         ((0, 2), (1, 2), (2, 3), (3, 4))),
    Task("paint <p>", ("a kitchen", "a bedroom", "a hall", "a bathroom", "a small office"),
         ("move the furniture away from the walls", "cover the floor with old sheets", "clean the walls",
          "paint the walls with a roller", "let the paint dry", "put the furniture back"),
         ((0, 3), (1, 3), (2, 3), (3, 4), (4, 5), (0, 5))),
    Task("bake <p> cake", ("an apple", "a lemon", "a cherry", "a plum", "a carrot", "a banana"),
         ("heat the oven", "mix flour, sugar and eggs in a bowl", "stir in the chopped fruit",
          "pour the mix into a tin", "bake the cake for forty minutes", "let the cake cool"),
         ((1, 2), (2, 3), (3, 4), (0, 4), (4, 5))),
    Task("learn to play the <p>", ("piano", "violin", "flute", "guitar", "harp", "trumpet", "cello", "drum"),
         ("find a good teacher", "borrow or buy an instrument", "learn the basic notes",
          "practise a little every day", "play simple songs for your friends"),
         ((1, 3), (2, 3), (2, 4), (0, 2))),
    Task("send a letter to <p>", (),
         ("write the letter", "fold it and put it in an envelope", "write the address on the envelope",
          "put a stamp on the envelope", "take it to the post office"),
         ((0, 1), (1, 4), (2, 4), (3, 4))),
    Task("pack for a trip to <p>", (),
         ("make a list of what you need", "check the weather forecast", "choose your clothes",
          "fold the clothes neatly", "put everything in a bag", "check the list again"),
         ((0, 4), (1, 2), (2, 3), (3, 4), (4, 5), (0, 5))),
    Task("make <p> salad", ("an apple", "a pear", "a mango", "a peach", "a melon", "a grape", "a cherry"),
         ("wash the fruit", "peel the fruit if needed", "cut the fruit into small pieces",
          "put the pieces in a bowl", "add a spoon of honey", "stir gently and serve"),
         ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5))),
    Task("catch <p>", ("a trout", "a salmon", "a carp", "a pike", "a cod"),
         ("get a fishing rod", "find a quiet spot by the water", "put bait on the hook", "cast the line",
          "wait patiently for a bite", "pull the fish out slowly"),
         ((0, 2), (2, 3), (1, 3), (3, 4), (4, 5))),
    Task("build <p>", ("a bench", "a shelf", "a table", "a stool", "a desk"),
         ("draw a simple plan", "buy the wood", "cut the wood to size", "join the pieces with screws",
          "sand the rough edges", "paint or oil the wood"),
         ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (0, 2))),
    Task("clean <p>", ("a kitchen", "a bedroom", "a classroom", "a shop", "a small office"),
         ("open the windows", "pick up everything on the floor", "dust the shelves", "sweep the floor",
          "mop the floor", "take out the rubbish"),
         ((1, 3), (2, 3), (3, 4), (1, 5))),
    Task("grow <p> from seed", ("tomatoes", "beans", "peas", "sunflowers", "pumpkins", "carrots"),
         ("buy good seeds", "fill small pots with soil", "plant the seeds in the pots", "water them every day",
          "move the young plants outside", "pick the crop when it is ready"),
         ((0, 2), (1, 2), (2, 3), (3, 4), (4, 5))),
)  # fmt: skip

_HOWTO_PROMPTS = (
    "How do I <title>?",
    "How can I <title>?",
    "What are the steps to <title>?",
    "Explain how to <title>.",
    "Tell me how to <title>, step by step.",
)


def _step_templates(title: str, n: int) -> list[str]:
    """Four list forms with different connectives; slots s1..sn are in text order."""
    first_then = "First, {s1}. " + " ".join(f"Then, {{s{i}}}." for i in range(2, n)) + f" Finally, {{s{n}}}."
    numbered = _numbered("s", n)
    to_do = f"To {title}, " + ", ".join(f"{{s{i}}}" for i in range(1, n)) + f" and then {{s{n}}}."
    here = (
        "Here is how: {s1}, " + ", ".join(f"then {{s{i}}}" for i in range(2, n)) + f", and finally {{s{n}}}."
    )
    return [first_then, numbered, to_do, here]


def _topological_order(n: int, before: tuple[tuple[int, int], ...], rng: random.Random) -> list[int]:
    """A random order of steps 0..n-1 respecting ``before`` (random choice among ready steps)."""
    order: list[int] = []
    remaining = set(range(n))
    while remaining:
        ready = sorted(i for i in remaining if not any(j == i and a in remaining for a, j in before))
        step = rng.choice(ready)
        order.append(step)
        remaining.remove(step)
    return order


def _howto(world: World, rng: random.Random) -> Built:
    task = rng.choice(TASKS)
    if task.title.endswith("trip to <p>"):
        param = rng.choice(world.cities)
    elif task.title.startswith("send a letter"):
        param = rng.choice(world.people)
    else:
        param = rng.choice(task.params)
    title = _sub(task.title, p=param)
    instruction = _sub(rng.choice(_HOWTO_PROMPTS), title=title)
    n = len(task.steps)
    templates = _step_templates(title, n)
    order = _topological_order(n, task.before, rng)
    values = {f"s{slot + 1}": task.steps[step] for slot, step in enumerate(order)}
    check = _slots(
        templates,
        {"s": list(task.steps)},
        all=["s"],
        before=[[task.steps[a], task.steps[b]] for a, b in task.before],
    )
    return instruction, "", _fill(rng.choice(templates), values), check


def _compare(rng: random.Random) -> Built:
    """'What is the difference between a plum and a drill?': two orders, two connectives."""
    ca, cb = rng.sample([c for c in WORD_CLASSES if c.countable], 2)
    a, b = _article(rng.choice(ca.items)), _article(rng.choice(cb.items))
    la, lb = _article(ca.label), _article(cb.label)
    instruction = rng.choice(
        (
            f"What is the difference between {a} and {b}?",
            f"How is {a} different from {b}?",
            f"Can you explain how {a} and {b} differ?",
        )
    )
    answers = [
        f"{a} is {la}, while {b} is {lb}.",
        f"{b} is {lb}, but {a} is {la}.",
        f"{a} is {la} and {b} is {lb}.",
        f"The first is {la} and the second is {lb}.",
    ]
    answers = [_sentence_case(x) for x in answers]
    return instruction, "", rng.choice(answers), _exact(answers)


WHY_QUESTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Why do people wear coats in winter?", "people wear coats in winter", ("it is cold outside", "coats keep them warm")),
    ("Why do birds fly south in autumn?", "birds fly south in autumn", ("the weather gets too cold", "they look for food in warmer places")),
    ("Why do we brush our teeth?", "we brush our teeth", ("it keeps our teeth clean", "it stops tooth decay")),
    ("Why do plants need water?", "plants need water", ("they use it to grow", "it carries food through the plant")),
    ("Why do people sleep at night?", "people sleep at night", ("the body needs rest", "it is dark and quiet")),
    ("Why do we wash our hands before eating?", "we wash our hands before eating", ("it removes germs", "it keeps us from getting sick")),
    ("Why do leaves fall in autumn?", "leaves fall in autumn", ("the trees save water for winter", "the days get shorter and colder")),
    ("Why do people use umbrellas?", "people use umbrellas", ("they keep the rain off", "they give shade from the sun")),
    ("Why do ships have anchors?", "ships have anchors", ("anchors stop them from drifting", "they need to stay in one place")),
    ("Why do farmers plant seeds in spring?", "farmers plant seeds in spring", ("the soil gets warm", "the crops have all summer to grow")),
    ("Why do we cook meat?", "we cook meat", ("cooking kills germs", "it makes the meat easier to eat")),
    ("Why do people read books?", "people read books", ("they want to learn new things", "books are fun")),
    ("Why do cats purr?", "cats purr", ("they feel happy", "it calms them down")),
    ("Why do we need to drink water?", "we need to drink water", ("the body is mostly water", "it keeps us from feeling tired")),
    ("Why do bakers get up early?", "bakers get up early", ("bread takes hours to make", "people want fresh bread in the morning")),
    ("Why do people save money?", "people save money", ("they want to buy something big later", "it helps in hard times")),
    ("Why do people exercise?", "people exercise", ("it keeps the body strong", "it makes them feel good")),
    ("Why do we wear seat belts?", "we wear seat belts", ("they keep us safe in a crash", "the law says so")),
    ("Why is the sky dark at night?", "the sky is dark at night", ("the sun is on the other side of the earth", "our side of the earth faces away from the sun")),
    ("Why do people plant trees?", "people plant trees", ("trees give shade", "trees clean the air")),
)  # fmt: skip
_WHY_PROMPTS = ("<q>", "Explain why <c>.", "Can you tell me why <c>?", "What is the reason that <c>?")
_WHY_ANSWERS = ("Because <r>.", "<C> because <r>.", "The main reason is that <r>.", "It is because <r>.")


def _why(rng: random.Random) -> Built:
    question, clause, reasons = rng.choice(WHY_QUESTIONS)
    instruction = _sub(rng.choice(_WHY_PROMPTS), q=question, c=clause)
    answers = [_sentence_case(_sub(t, r=r, C=clause)) for r in reasons for t in _WHY_ANSWERS]
    return instruction, "", rng.choice(answers), _exact(answers)


def _general_qa(world: World, rng: random.Random, k: int, seed: int) -> Built:
    roll = rng.random()
    if roll < 0.5:
        return _howto(world, rng)
    if roll < 0.8:
        return _compare(rng)
    return _why(rng)


_BUILDERS: dict[str, Callable[[World, random.Random, int, int], Built]] = {
    "open_qa": _open_qa,
    "closed_qa": _closed_qa,
    "classification": _classification,
    "information_extraction": _information_extraction,
    "summarization": _summarization,
    "brainstorming": _brainstorming,
    "creative_writing": _creative_writing,
    "general_qa": _general_qa,
}

# ---------------------------------------------------------------------------------------------
# The record stream, splits and files
# ---------------------------------------------------------------------------------------------


def _record(seed: int, i: int) -> dict:
    """Stream record ``i``: depends on (seed, i) only, never on how many records are asked for."""
    world = build_world(seed)
    n_cycle = len(_CYCLE)
    category = _CYCLE[i % n_cycle]
    k = (i // n_cycle) * _CYCLE.count(category) + _CYCLE[: i % n_cycle].count(category)
    rng = random.Random(f"minillm-bundled-{seed}-{i}")
    instruction, context, response, check = _BUILDERS[category](world, rng, k, seed)
    return {
        "id": f"bundled-{i:06d}",
        "category": category,
        "instruction": instruction,
        "context": context,
        "response": response,
        "check": check,
    }


def _stream(seed: int) -> Iterator[dict]:
    for i in itertools.count():
        yield _record(seed, i)


def generate_records(n: int, seed: int) -> list[dict]:
    """The first ``n`` records of the stream of ``seed`` (deterministic; categories interleaved)."""
    if n < 0:
        raise MinillmError(f"generate_records: n must be >= 0, got {n}")
    return [_record(seed, i) for i in range(n)]


def _prompt_key(record: dict) -> tuple[str, str]:
    return record["instruction"], record["context"]


def _held_out_split(seed: int, key: tuple[str, str]) -> str | None:
    """'valid' or 'test' for a held-out prompt, None for a train prompt.

    Hashing the prompt (not the record index) keeps a prompt that recurs in the stream on one side
    of the split; a fact asked in a held-out phrasing is still asked in train in other phrasings.
    """
    digest = hashlib.sha256(f"{seed}\x00{key[0]}\x00{key[1]}".encode()).digest()
    value = int.from_bytes(digest[:8], "big")
    if value % 1000 >= _HELD_OUT_PER_MILLE:
        return None
    return "valid" if (value // 1000) % 2 == 0 else "test"


def _fact_key(record: dict) -> str | None:
    """Identifies the world fact an open_qa record asks (its answer set); None for other records."""
    return json.dumps(record["check"], sort_keys=True) if record["category"] == "open_qa" else None


def make_splits(
    seed: int = 0, n_train: int = 10000, n_valid: int = 500, n_test: int = 500
) -> dict[str, list[dict]]:
    """Train / valid / test lists drawn from one stream.

    Prompts (instruction, context) whose hash falls in the held-out share never enter train;
    valid and test take disjoint halves of them, and each held-out prompt is used at most once.
    Train may repeat a prompt (with another sampled reference), as Dolly-style data does.
    Train is filled first; an open_qa record enters valid/test only if train asks the same fact
    (in another phrasing or in a closed_qa record), so evaluation tests recall of learnable facts.
    """
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    for name, size in sizes.items():
        if size < 0:
            raise MinillmError(f"make_splits: n_{name} must be >= 0, got {size}")
    budget = 40 * (n_train + n_valid + n_test) + 10000
    stream = enumerate(_stream(seed))
    train: list[dict] = []
    held_out: list[tuple[str, dict]] = []
    seen: set[tuple[str, str]] = set()

    def take_held_out(split: str, record: dict) -> None:
        key = _prompt_key(record)
        if key not in seen:
            seen.add(key)
            held_out.append((split, record))

    while len(train) < n_train:
        _, record = next(stream)
        split = _held_out_split(seed, _prompt_key(record))
        if split is None:
            train.append(record)
        else:
            take_held_out(split, record)
    known = {
        json.dumps(r["check"], sort_keys=True) for r in train if r["category"] in ("open_qa", "closed_qa")
    }
    out: dict[str, list[dict]] = {"train": train, "valid": [], "test": []}

    def accept(split: str, record: dict) -> None:
        fact = _fact_key(record)
        if len(out[split]) < sizes[split] and (fact is None or not train or fact in known):
            out[split].append(record)

    for split, record in held_out:
        accept(split, record)
    while len(out["valid"]) < n_valid or len(out["test"]) < n_test:
        i, record = next(stream)
        if i >= budget:
            raise MinillmError(
                f"make_splits: could not find {n_valid} valid and {n_test} test prompts that are distinct "
                f"(got {len(out['valid'])} and {len(out['test'])}); ask for fewer evaluation records"
            )
        split = _held_out_split(seed, _prompt_key(record))
        if split is not None and _prompt_key(record) not in seen:
            seen.add(_prompt_key(record))
            accept(split, record)
    return out


def write_splits(
    out_dir: str | Path, seed: int = 0, n_train: int = 10000, n_valid: int = 500, n_test: int = 500
) -> dict[str, Path]:
    """Write ``train.jsonl``, ``valid.jsonl``, ``test.jsonl`` and ``meta.json`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = make_splits(seed=seed, n_train=n_train, n_valid=n_valid, n_test=n_test)
    paths: dict[str, Path] = {}
    for name, records in splits.items():
        path = out / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=True) + "\n")
        paths[name] = path
    meta = {
        "generator": "minillm.data.bundled",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "sizes": {name: len(records) for name, records in splits.items()},
        "categories": list(CATEGORIES),
    }
    meta_path = out / "meta.json"
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    paths["meta"] = meta_path
    return paths


def world_text(seed: int = 0) -> str:
    """One plain sentence per stated fact of the world (a few hundred lines), for pre-training text."""
    world = build_world(seed)
    lines = []
    for relation, subject, obj in world.fact_list():
        for sentence in RELATIONS[relation].sentences[:1]:
            if sentence:
                lines.append(_sentence_case(_sub(sentence, s=subject, o=obj, ao=_article(obj))))
    return "\n".join(lines) + "\n"
