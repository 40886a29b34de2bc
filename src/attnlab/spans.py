"""Spans (named token ranges found from text, never counted by hand) and HeadSets (``"L3H1,L5H0-7"``)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from attnlab.errors import AttnlabError


def char_range(text: str, span, where: str = "the text") -> tuple[int, int]:
    """Resolve a span given as a substring (first occurrence) or a ``(start, end)`` character range of ``text``."""
    if isinstance(span, tuple):
        if len(span) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in span):
            raise AttnlabError(f"cannot read the character range {span!r}: give (start, end) as two whole numbers")
        start, end = span
        if not (0 <= start < end <= len(text)):
            raise AttnlabError(f"character range {span} is outside {where} (length {len(text)}) or empty")
        return start, end
    if not isinstance(span, str) or not span.strip():
        raise AttnlabError("a span must be a non-empty piece of the text or a (start, end) character range")
    start = text.find(span)
    if start < 0:
        raise AttnlabError(f"span '{shorten(span)}' is not in {where}: give a piece of the text exactly as written")
    return start, start + len(span)


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters (with ``...``) for an error message."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def token_range(offsets: list[tuple[int, int]], start: int, end: int, what: str = "span") -> tuple[int, int]:
    """Tokens ``[a, b)`` whose character offsets overlap ``[start, end)``; special tokens (empty offsets) skipped."""
    hits = [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
    if not hits:
        raise AttnlabError(f"{what} covers no token (it may fall inside special tokens or be truncated away)")
    return hits[0], hits[-1] + 1


def strip_markers(text: str, open_mark: str = "<<", close_mark: str = ">>") -> tuple[str, list[tuple[int, int]]]:
    """Remove ``<<…>>`` markers; return the clean text and the character ranges they enclosed.

    Markers do not nest, and every opened one must be closed: ``<<a<<b>>c>>`` and ``a << b`` are refused.
    """
    pattern = re.compile(re.escape(open_mark) + r"(.*?)" + re.escape(close_mark), re.S)
    clean, ranges, last = [], [], 0
    pos = 0
    for m in pattern.finditer(text):
        if open_mark in m.group(1):
            raise AttnlabError(f"nested markers in '{shorten(m.group(0))}': mark separate pieces, "
                               f"each {open_mark}…{close_mark} closed before the next opens")
        clean.append(text[last:m.start()])
        pos += m.start() - last
        ranges.append((pos, pos + len(m.group(1))))
        clean.append(m.group(1))
        pos += len(m.group(1))
        last = m.end()
    if open_mark in text[last:]:
        raise AttnlabError(f"unclosed marker '{open_mark}' in the text: close it with '{close_mark}'")
    clean.append(text[last:])
    return "".join(clean), ranges


def has_chat_template(tokenizer) -> bool:
    """Whether ``tokenizer`` carries a chat template (instruct models such as SmolLM2-135M-Instruct do)."""
    return bool(getattr(tokenizer, "chat_template", None))


def chat_wrap(tokenizer, text: str) -> tuple[str, int]:
    """``text`` as one user turn of the model's chat template, with the generation prompt appended.

    Returns the templated string and the character offset at which ``text`` sits inside it, so that spans of
    the user's text can be found in what the model sees. Instruct models prompted without their template often
    end their turn at once (SmolLM2 answers a bare prompt with ``<|im_end|>``).
    """
    if not has_chat_template(tokenizer):
        raise AttnlabError("--chat: this model's tokenizer has no chat template; prompt it with plain text "
                           "(--no-chat)")
    wrapped = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                            add_generation_prompt=True)
    offset = wrapped.rfind(text)
    if offset < 0:
        raise AttnlabError("the chat template changes the prompt's text (it strips or escapes it), so spans cannot "
                           "be found in it: use --no-chat")
    return wrapped, offset


def head_name(layer: int, head: int) -> str:
    """A head as the command line and the reports write it: ``L3H5``."""
    return f"L{layer}H{head}"


@dataclass(frozen=True)
class HeadSet:
    """A set of (layer, head) pairs, parsed from ``"all"``, ``"L3"``, ``"L3H1,L5H0-7"`` and checked against a model."""

    pairs: frozenset

    @classmethod
    def parse(cls, spec: str, n_layers: int, n_heads: int) -> "HeadSet":
        """The heads ``spec`` names in a model of ``n_layers`` layers of ``n_heads`` heads; unknown ones refused."""
        if not isinstance(spec, str):
            raise AttnlabError(f"cannot read a head set given as a {type(spec).__name__}: write 'all', 'L3' or "
                               "'L3H1,L5H0-7'")
        spec = spec.strip()
        if spec == "all":
            return cls(frozenset((l, h) for l in range(n_layers) for h in range(n_heads)))
        pairs = set()
        for part in filter(None, (p.strip() for p in spec.split(","))):
            m = re.fullmatch(r"L(\d+)(?:-(\d+))?(?:H(\d+)(?:-(\d+))?)?", part)
            if not m:
                raise AttnlabError(f"cannot read head set '{part}': write 'all', 'L3', 'L2-4', 'L3H1' or 'L5H0-7'")
            l0 = int(m.group(1)); l1 = int(m.group(2) or l0)
            h0 = int(m.group(3)) if m.group(3) else 0
            h1 = int(m.group(4) or m.group(3) or n_heads - 1)
            if l1 >= n_layers or l0 > l1:
                raise AttnlabError(f"layer {l1 if l1 >= n_layers else l0} in '{part}' does not exist: the model has "
                                   f"layers 0-{n_layers - 1}")
            if h1 >= n_heads or h0 > h1:
                raise AttnlabError(f"head {h1 if h1 >= n_heads else h0} in '{part}' does not exist: the model has "
                                   f"heads 0-{n_heads - 1} per layer")
            pairs |= {(l, h) for l in range(l0, l1 + 1) for h in range(h0, h1 + 1)}
        if not pairs:
            raise AttnlabError("empty head set: write 'all', 'L3' or 'L3H1,L5H0-7'")
        return cls(frozenset(pairs))

    def __iter__(self):
        return iter(sorted(self.pairs))

    def __len__(self) -> int:
        return len(self.pairs)

    def __str__(self) -> str:
        return ",".join(head_name(l, h) for l, h in self)


@dataclass(frozen=True)
class PromptTokens:
    """One prompt of a batch as spans see it: the text they index and where each of its tokens lies.

    ``text`` is the user's prompt: character ranges index it and substrings are searched in it; special tokens
    the tokenizer added and a chat template around it are not part of it. ``offsets[i]`` is token ``i``'s
    character range in ``text`` (empty, or outside ``text``, for tokens that are not part of it); ``columns[i]``
    its column in the padded batch. ``offsets`` is None for a slow tokenizer, which gives no offsets.
    ``decoded`` marks a text decoded from token ids by a tokenizer that does not reproduce what it encoded
    (BERT's lowercases and re-spaces it), where character ranges of the user's text would land elsewhere.
    """

    text: str
    offsets: list[tuple[int, int]] | None
    columns: list[int]
    decoded: bool = False

    def columns_of(self, piece, where: str) -> list[int]:
        """The batch columns of the tokens that ``piece`` (a substring or a character range) covers."""
        if self.offsets is None:
            raise AttnlabError("text spans need a fast tokenizer (tokenizer.json) to map characters to tokens")
        if self.decoded and (isinstance(piece, tuple) or isinstance(piece, str) and piece not in self.text):
            raise AttnlabError(f"this tokenizer changes the text (it reads the prompt back as '{shorten(self.text)}'), "
                               "so spans cannot be placed from token ids: build the inputs with "
                               "attnlab.Spans.encode(tokenizer, prompts, spans)")
        a, z = char_range(self.text, piece, where=where)
        shown = f"'{shorten(piece)}'" if isinstance(piece, str) else f"'{shorten(self.text[a:z])}' (characters {a}-{z})"
        t0, t1 = token_range(self.offsets, a, z, what=f"span {shown} in {where}")
        return self.columns[t0:t1]


def span_mask(prompts: list[PromptTokens], spec, width: int, noun: str = "prompt"):
    """``[B, width]`` bool: the tokens of ``spec`` (see :func:`per_prompt`) in each prompt of a padded batch."""
    import torch

    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for b, (prompt, pieces) in enumerate(zip(prompts, per_prompt(spec, len(prompts)))):
        for piece in pieces:
            mask[b, prompt.columns_of(piece, where=f"{noun} {b + 1}")] = True
    return mask


def added_special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after every text it encodes (``<|bos|>``; BERT's ``[CLS]``, ``[SEP]``)."""
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a")["input_ids"])
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i], full[i + len(plain):]
    return [], []


FIDELITY_SAMPLE = "The Cat, isn't it?  Yes:\tno"


def decodes_faithfully(tokenizer) -> bool:
    """Whether decoding what the tokenizer encoded gives the text back (case, punctuation, spaces kept)."""
    ids = tokenizer(FIDELITY_SAMPLE, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) == FIDELITY_SAMPLE


def prompt_from_ids(tokenizer, ids: list[int], columns: list[int]) -> PromptTokens:
    """A prompt given only as token ids (``tokenizer(prompt)``'s), as spans see it.

    The special tokens the tokenizer added before and after the text are set aside, so that character ranges
    index the prompt as the user wrote it; the rest is decoded and encoded again with offsets. When that does
    not give the same ids back the mapping would be a guess, so the user is told to build the inputs with
    :meth:`Spans.encode`.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise AttnlabError("text spans need a fast tokenizer (tokenizer.json) to map characters to tokens")
    before, after = added_special_tokens(tokenizer)
    head = len(before) if ids[:len(before)] == before else 0
    tail = len(after) if after and len(ids) - head >= len(after) and ids[len(ids) - len(after):] == after else 0
    inner = ids[head:len(ids) - tail]
    text = tokenizer.decode(inner, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) != inner:
        raise AttnlabError("cannot map text spans onto these tokens (the tokenizer does not round-trip the prompt): "
                           "build the inputs with attnlab.Spans.encode(tokenizer, prompts, spans)")
    return PromptTokens(text, [(0, 0)] * head + list(enc["offset_mapping"]) + [(0, 0)] * tail, columns,
                        decoded=not decodes_faithfully(tokenizer))


class SpanInputs(dict):
    """Model inputs (``input_ids``, ``attention_mask``; left-padded) that know their spans.

    Made by :meth:`Spans.encode`; pass it as ``model(**inputs)`` / ``model.generate(**inputs)`` and give it
    to a method as its span (``PASTA(emphasize=inputs)``) to use the ``<<…>>``-marked text.
    """

    def __init__(self, input_ids, attention_mask, masks: dict, texts: list[str]):
        super().__init__(input_ids=input_ids, attention_mask=attention_mask)
        self.masks, self.texts = masks, texts


class Spans:
    """Resolve spans given as text, character ranges or ``<<…>>`` markers into token masks."""

    @staticmethod
    def encode(tokenizer, prompts, spans: dict | None = None, *, markers: tuple[str, str] = ("<<", ">>"),
               chat: bool = False) -> SpanInputs:
        """Tokenize ``prompts`` (markers stripped, left padding) and resolve the marked text plus ``spans``.

        ``spans`` maps a name to a substring / character range (of the clean text) for every prompt, or to a
        list with one per prompt. The marked pieces are the span ``"marked"``. With ``chat=True`` each prompt
        becomes one user turn of the tokenizer's chat template (:func:`chat_wrap`); spans are still given in,
        and searched in, the prompt's own text, and land on the same text inside the template. ``texts`` are
        then the templated strings.
        """
        from attnlab.batching import pad_rows

        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        check_prompts(prompts)
        cleaned = [strip_markers(p, *markers) for p in prompts]
        wrapped = [chat_wrap(tokenizer, text) if chat else (text, 0) for text, _ in cleaned]
        encs = [tokenizer(w, return_offsets_mapping=True, add_special_tokens=not chat) for w, _ in wrapped]
        ids, mask = pad_rows([list(e["input_ids"]) for e in encs], tokenizer.pad_token_id)
        width = ids.shape[1]
        rows = [PromptTokens(text, [(s - at, e - at) for s, e in enc["offset_mapping"]],
                             list(range(width - len(enc["input_ids"]), width)))
                for (text, _), (_, at), enc in zip(cleaned, wrapped, encs)]
        masks = {"marked": span_mask(rows, [list(ranges) for _, ranges in cleaned], width)}
        for name, spec in (spans or {}).items():
            found = span_mask(rows, spec, width)
            masks[name] = found | masks[name] if name in masks else found
        return SpanInputs(ids, mask, masks, [w for w, _ in wrapped])

    @staticmethod
    def resolve(tokenizer, input_ids, valid, spec, name: str = "span"):
        """``[B, T]`` bool mask of ``spec`` in a batch given as ids (left or right padded).

        Character ranges index each prompt as the user wrote it: special tokens the tokenizer added (``<|bos|>``)
        are not part of it (see :func:`prompt_from_ids`).
        """
        import torch

        if isinstance(spec, SpanInputs):
            if spec["input_ids"].shape != input_ids.shape or not torch.equal(spec["input_ids"], input_ids.cpu()):
                raise AttnlabError(f"the {name} span was made by Spans.encode for other inputs: call the model on "
                                   "those inputs (model(**inputs) / model.generate(**inputs))")
            return (spec.masks[name] if name in spec.masks else spec.masks["marked"]).clone()
        if tokenizer is None:
            raise AttnlabError("text spans need the tokenizer: pass tokenizer= to attnlab.steer (or load the model "
                               "with attnlab.load)")
        rows = []
        for b in range(input_ids.shape[0]):
            columns = valid[b].nonzero().flatten().tolist()
            rows.append(prompt_from_ids(tokenizer, input_ids[b, columns].tolist(), columns))
        return span_mask(rows, spec, input_ids.shape[1])


def check_prompts(prompts: list) -> None:
    """Refuse an empty list of prompts, a prompt that is not text, and an empty prompt, in one line each."""
    if not prompts:
        raise AttnlabError("no prompt given: pass at least one text")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise AttnlabError(f"prompt {i + 1} is a {type(prompt).__name__}, not text: give each prompt as a str")
        if not prompt.strip():
            raise AttnlabError(f"prompt {i + 1} is empty: give some text")


def per_prompt(spec, batch: int) -> list[list]:
    """Normalise a span spec to one list of pieces per prompt.

    A string or ``(start, end)`` applies to every prompt; a list of those too (their union); a list of lists
    gives each prompt its own pieces.
    """
    if isinstance(spec, (str, tuple)):
        return [[spec]] * batch
    if not isinstance(spec, list):
        raise AttnlabError(f"cannot read a span given as a {type(spec).__name__}: give a piece of the text, a "
                           "(start, end) character range, or a list of them")
    if not spec:
        raise AttnlabError("empty span list: give at least one piece of text to act on")
    if all(isinstance(s, list) for s in spec):
        if len(spec) != batch:
            raise AttnlabError(f"{len(spec)} per-prompt span lists for {batch} prompts: give one list per prompt")
        return spec
    return [spec] * batch
