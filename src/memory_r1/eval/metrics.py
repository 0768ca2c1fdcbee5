"""Answer metrics as the Mem0 harness defines them (reference notes, section 4).

One module serves both evaluation and RL rewards. F1 compares token *sets* after lowercasing and
turning . , ! ? into spaces: no stemming, no article removal, exactly like the harness the paper follows.
BLEU-1 is NLTK's `sentence_bleu` over lowercased Treebank tokens; `tokenize` replaces `word_tokenize`,
whose punkt sentence splitter needs data that cannot be downloaded here.
"""

from __future__ import annotations

import re

from nltk.tokenize import NLTKWordTokenizer
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

_PUNCT = str.maketrans({".": " ", ",": " ", "!": " ", "?": " "})


def f1_tokens(text: str) -> set[str]:
    return set(str(text).lower().translate(_PUNCT).split())


def f1_score(prediction: str, gold: str) -> float:
    pred, ref = f1_tokens(prediction), f1_tokens(gold)
    common = len(pred & ref)
    if not pred or not ref or not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    """Case-insensitive equality after stripping (Mem0); the paper does not state its normalisation."""
    return float(str(prediction).strip().lower() == str(gold).strip().lower())


# ---------------------------------------------------------------- BLEU-1

# The word tokenizer `nltk.word_tokenize` applies to each punkt sentence (checked in NLTK 3.10's source:
# a module-level NLTKWordTokenizer, called once per sentence, or once on the whole text if preserve_line).
_WORD_TOKENIZER = NLTKWordTokenizer()

# A candidate sentence end: . ! or ?, any closing quotes/brackets, whitespace, then more text.
_SENTENCE_END = re.compile(r"([.!?])[\"')\]]*\s+(?=\S)")
# Words whose final period does not end a sentence: initials and dotted letters (j., u.s., e.g.),
# numbers (2023.), and a short fixed list of common abbreviations (ours; punkt's list is learned).
_NO_BREAK_WORD = re.compile(r"[a-z](?:\.[a-z])*|\d[\d.,]*")
_ABBREVIATIONS = frozenset(
    ["mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "vs", "etc", "inc", "ltd", "approx",
     "dept", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"]
)


def split_sentences(text: str) -> list[str]:
    """Sentences as punkt would roughly cut them; see `tokenize` for where the two can disagree."""
    sentences, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.group(1) == "." and _period_is_internal(text[start : match.start(1)]):
            continue
        sentences.append(text[start : match.end()])
        start = match.end()
    sentences.append(text[start:])
    return [s for s in sentences if s.strip()]


def _period_is_internal(before: str) -> bool:
    words = before.split()
    word = words[-1].lstrip("\"'([{`").lower() if words else ""
    return bool(_NO_BREAK_WORD.fullmatch(word)) or word in _ABBREVIATIONS


def tokenize(text: str) -> list[str]:
    """`nltk.word_tokenize(text)` without punkt: `split_sentences`, then NLTK's Treebank word tokenizer
    (`NLTKWordTokenizer().tokenize`) on each sentence, exactly as `word_tokenize` does after punkt.

    Sentence rule: a boundary follows `.`, `!` or `?` (plus any closing `"`, `'`, `)`, `]`) when
    whitespace and more text come next, except after a period ending an initial or dotted letters
    ("J.", "U.S.", "e.g."), a number ("2023."), or a word in `_ABBREVIATIONS` ("Dr.", "Mrs.", "etc.").

    Where the result can differ from punkt: only at a period followed by whitespace and more text,
    because the Treebank tokenizer itself splits off every `!` and `?` and a string-final period.
    - an abbreviation punkt learned but `_ABBREVIATIONS` lacks ("Gen. Lee", "Corp. policy"): we split,
      giving "gen" "." where punkt keeps "gen.";
    - a real sentence end after an initial, number or listed word ("... in 2023. 5 more", "... etc.
      Then"): we keep "2023." as one token where punkt may give "2023" ".";
    - punkt's orthographic heuristics (whether the next word is usually capitalised) and the rare
      break it makes with no whitespace after the period (`"stop."then`) are not reproduced.
    Decimals ("3.5") and dotted names ("u.s.") never contain period+whitespace, so they match punkt.

    A single-sentence short answer, the case that matters for LoCoMo, has no such period, so both
    punkt and this function see one sentence and the tokens are identical (one Treebank call).
    """
    return [token for sentence in split_sentences(text) for token in _WORD_TOKENIZER.tokenize(sentence)]


_SMOOTHING = SmoothingFunction().method1


def bleu1(prediction: str, gold: str) -> float:
    """BLEU-1 as the Mem0 harness computes it: lowercase, tokenize, NLTK `sentence_bleu` with weights
    (1, 0, 0, 0) and smoothing method1, brevity penalty included.

    With these weights the score is BP * clipped unigram precision: NLTK returns 0 before smoothing
    when no unigram matches, and method1's epsilon only reaches the zero-weighted higher orders.
    """
    pred, ref = tokenize(str(prediction).lower()), tokenize(str(gold).lower())
    if not pred or not ref:
        return 0.0
    score = sentence_bleu([ref], pred, weights=(1, 0, 0, 0), smoothing_function=_SMOOTHING)
    return float(score)


def score_answer(prediction: str, gold: str) -> dict[str, float]:
    """All three lexical metrics for one answer: the record the harness reports and rewards read."""
    return {
        "f1": f1_score(prediction, gold),
        "bleu1": bleu1(prediction, gold),
        "em": exact_match(prediction, gold),
    }
