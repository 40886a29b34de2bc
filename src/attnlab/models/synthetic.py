"""Synthetic in-context tasks: the formats of the evaluation tasks, which the bundled ``tiny`` model trained on.

Each generator returns one plain-English example (prompt and answer). They give the model what the
published steering methods act on: retrieval among distractors (PASTA, lost-in-the-middle), copying
(induction heads), "previously X, but now Y" overrides (PASTA's CounterFact setting) and format
instructions (InstABoost / SpotLight). The evaluation tasks of ``attnlab.evals`` use them, so what is
measured there is what the model saw in training; the training mixes (with the tasks only training
uses) are in the repository's ``training/mixes.py``, outside the installed package.
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
