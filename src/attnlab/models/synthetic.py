"""Synthetic in-context tasks mixed into the bundled ``tiny`` model's training data.

Each generator returns one plain-English example as text. They give the model what the published
steering methods act on: retrieval among distractors (PASTA, lost-in-the-middle), copying (induction
heads), "previously X, but now Y" overrides (PASTA's CounterFact setting), format instructions
(InstABoost / SpotLight), and positions where a head must find *nothing* (absent keys, a copy that
stops, a bigram-backcopy stream), the situations in which attention sinks form (Gu et al. 2025,
"When Attention Sink Emerges"; Guo et al. 2024, "Active-Dormant Attention Heads").

The evaluation tasks of ``attnlab.evals`` use the same formats, so what is measured there is what the
model saw in training.
"""
from __future__ import annotations

import random

# Short, common, single-token-ish English nouns: keys, subjects and filler of the synthetic tasks.
WORDS = (
    "apple river stone cloud tiger lamp garden silver window forest candle mirror ocean castle "
    "pepper violin rabbit market bridge anchor feather desert island rocket pillow meadow jacket "
    "hammer basket dragon lemon copper tunnel harbor falcon orchid ladder pencil saddle thunder "
    "velvet walnut canyon glacier lantern marble needle parrot quartz shadow spider timber valley "
    "wagon zebra badger cactus dolphin ember fossil goblet hazel igloo jungle kettle lizard magnet "
    "nectar oyster pirate quill raven salmon tulip umbrella vessel willow yarn beacon cobalt "
    "dune engine fern grape honey iron jade kite lotus maple nickel olive pearl quiver reef "
    "sage tin violet wheat amber brick cedar dove elm fig gravel heron ivy juniper koala linen moss"
).split()

CITIES = ("Paris Rome Madrid Berlin Vienna Lisbon Oslo Dublin Prague Warsaw Athens Cairo Lima Quito "
          "Tokyo Delhi Nairobi Ottawa Havana Bogota Manila Seoul Hanoi Accra Tunis Riga Sofia Minsk").split()
LANDS = ("Zorland Velmar Quastia Brindor Talvesh Oskaria Nerith Fallowmere Ustan Kelvary Dromund Ashkar "
         "Pellucia Varnhold Corvina Ithel Maroska Sundral Yorvik Elbara").split()
ATTRIBUTES = ["capital", "largest port", "oldest city", "seat of the council", "main market town"]


def kv_retrieval(rng: random.Random, n_pairs: int, *, absent: bool = False, query_index: int | None = None) -> dict:
    """Key-value lookup among distractors: ``Records: apple=482. river=17. ... Query: river? Answer: 17``.

    With ``absent=True`` the queried key is not among the records and the answer is ``none``.
    ``query_index`` places the relevant pair (for lost-in-the-middle sweeps).
    """
    keys = rng.sample(WORDS, n_pairs + 1)
    values = [str(rng.randrange(10, 1000)) for _ in range(n_pairs)]
    records = " ".join(f"{k}={v}." for k, v in zip(keys[:n_pairs], values))
    if absent:
        query, answer = keys[n_pairs], "none"
    else:
        i = rng.randrange(n_pairs) if query_index is None else query_index
        query, answer = keys[i], values[i]
    prompt = f"Records: {records}\nQuery: {query}?\nAnswer:"
    return {"prompt": prompt, "answer": f" {answer}", "query": query}


def copy_words(rng: random.Random, n_words: int) -> dict:
    """Copying (induction): a random word list, then the same list again, then ``end``."""
    words = " ".join(rng.choice(WORDS) for _ in range(n_words))
    return {"prompt": f"Copy: {words}\nAgain:", "answer": f" {words} end"}


def override(rng: random.Random, n_distractors: int = 2) -> dict:
    """A 'previously X, but now Y' override among unrelated facts: the answer is the new value."""
    land, attribute = rng.choice(LANDS), rng.choice(ATTRIBUTES)
    old, new = rng.sample(CITIES, 2)
    facts = [f"The {rng.choice(ATTRIBUTES)} of {rng.choice([l for l in LANDS if l != land])} is {rng.choice(CITIES)}."
             for _ in range(n_distractors)]
    key = f"Previously the {attribute} of {land} was {old}, but now the {attribute} of {land} is {new}."
    facts.insert(rng.randrange(len(facts) + 1), key)
    return {"prompt": " ".join(facts) + f" Today the {attribute} of {land} is", "answer": f" {new}",
            "emphasis": key, "old": f" {old}"}


def format_instruction(rng: random.Random, filler: str) -> dict:
    """A format instruction ahead of some prose; the answer is a word in the instructed format."""
    word = rng.choice(WORDS)
    style = rng.choice(["upper", "lower", "brackets"])
    instruction = {"upper": "Answer in upper case.", "lower": "Answer in lower case.",
                   "brackets": "Answer inside brackets."}[style]
    answer = {"upper": word.upper(), "lower": word, "brackets": f"[{word}]"}[style]
    prompt = f"Instruction: {instruction}\n{filler}\nName the word: {word}.\nAnswer:"
    return {"prompt": prompt, "answer": f" {answer}", "instruction": instruction}


def bigram_backcopy(rng: random.Random, n_words: int) -> dict:
    """Guo et al.'s Bigram-Backcopy task in words: after the trigger ``twice`` the previous word repeats.

    Most positions need no attention at all, which is what drives dormant heads and sinks.
    """
    out, prev = [], rng.choice(WORDS)
    for _ in range(n_words):
        if rng.random() < 0.12 and out and out[-1] != "twice":
            out += ["twice", prev]
        else:
            prev = WORDS[(WORDS.index(prev) * 7 + rng.randrange(3)) % len(WORDS)]
            out.append(prev)
    return {"prompt": "Stream:", "answer": " " + " ".join(out) + "."}


def repeated_passage(rng: random.Random, passage: str) -> dict:
    """Induction on prose: a passage, then the same passage again.

    Natural text repeats itself rarely; this gives the induction heads prose to copy from (Olsson et al.
    2022), and prose positions where nothing earlier matches, the no-op case where heads park on the
    first token.
    """
    return {"prompt": f"{passage}\nOnce more:", "answer": f" {passage}"}


def _kv(rng: random.Random) -> dict:
    return kv_retrieval(rng, rng.choice([2, 4, 8, 16, 32, 48, 64]), absent=rng.random() < 0.15)


# Task mixes: (share, generator of one example) pairs. "v1" trained the first two phases of the bundled
# model; its copy lists (3-39 words, 20%) were too short for induction to pay off and the model stayed on
# the induction plateau. "v2" adds copy lists of up to 60 words and repeated prose passages.
MIXES = {
    "v1": lambda filler: [
        (0.35, _kv),
        (0.20, lambda rng: copy_words(rng, rng.randrange(3, 40))),
        (0.17, lambda rng: override(rng, rng.randrange(0, 6))),
        (0.13, lambda rng: format_instruction(rng, filler(rng.randrange(40, 400)))),
        (0.15, lambda rng: bigram_backcopy(rng, rng.randrange(20, 120))),
    ],
    "v2": lambda filler: [
        (0.28, _kv),
        (0.17, lambda rng: copy_words(rng, rng.randrange(3, 61))),
        (0.15, lambda rng: repeated_passage(rng, filler(rng.randrange(60, 500)).strip())),
        (0.14, lambda rng: override(rng, rng.randrange(0, 6))),
        (0.14, lambda rng: format_instruction(rng, filler(rng.randrange(40, 400)))),
        (0.12, lambda rng: bigram_backcopy(rng, rng.randrange(20, 120))),
    ],
}


def sample_example(rng: random.Random, filler_source, mix: str = "v2") -> str:
    """One synthetic training example (prompt + answer) drawn from the task mix ``mix`` (see ``MIXES``)."""
    kind, total = rng.random(), 0.0
    for share, make in MIXES[mix](filler_source):
        total += share
        if kind < total:
            break
    ex = make(rng)
    return ex["prompt"] + ex["answer"]
