"""F1, BLEU-1 and EM as the Mem0 harness computes them, with values worked out by hand."""

import nltk
import pytest

from memory_r1.eval.metrics import bleu1, exact_match, f1_score, score_answer, tokenize


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("7 May 2023", "7 May 2023", 1.0),
        ("7 May, 2023.", "7 may 2023", 1.0),  # punctuation -> spaces, lowercase
        ("May 2023", "7 May 2023", 0.8),  # p=2/2, r=2/3 -> 2*(1*2/3)/(5/3) = 0.8
        ("the the cat", "the cat sat", 0.8),  # sets: {the,cat} vs {the,cat,sat}: p=1, r=2/3
        ("Boston", "Denver", 0.0),
        ("", "Denver", 0.0),
        ("Denver", "", 0.0),
        ("it's Denver", "Denver", 2 / 3),  # apostrophe kept: {it's, denver}: p=1/2, r=1
    ],
)
def test_f1(prediction, gold, expected):
    assert f1_score(prediction, gold) == pytest.approx(expected)


def test_exact_match_is_case_insensitive_after_strip():
    assert exact_match("  Denver ", "denver") == 1.0
    assert exact_match("Denver.", "Denver") == 0.0


# ---------------------------------------------------------------- BLEU-1 and F1, worked out by hand
#
# BLEU-1 with weights (1, 0, 0, 0) = BP * P1, where P1 = clipped unigram matches / c (prediction tokens)
# and BP = 1 if c > r else exp(1 - r/c) (r = gold tokens; c == r gives exp(0) = 1). method1 smoothing
# never touches P1: NLTK returns 0 before smoothing when no unigram matches, and the epsilon it adds to
# zero bigram..4-gram precisions is multiplied by weight 0. Tokens are lowercased Treebank tokens:
# punctuation becomes tokens for BLEU, while F1 turns . , ! ? into spaces and compares sets.
# F1 = 2pr / (p + r) with p = |P & G| / |P|, r = |P & G| / |G| over the token sets P, G.
TABLE = [
    # 1. identical. F1: sets equal -> 1. BLEU: [7, may, 2023] vs same, P1 = 3/3, c = r = 3, BP = 1 -> 1.
    ("7 May 2023", "7 May 2023", 1.0, 1.0),
    # 2. case + punctuation. F1: {7, may, 2023} both -> 1. BLEU: [7, may, ",", 2023, "."] (c=5) vs
    #    [7, may, 2023] (r=3): matches 3, P1 = 3/5, c > r so BP = 1 -> 0.6.
    ("7 May, 2023.", "7 may 2023", 1.0, 0.6),
    # 3. shorter prediction. F1: p = 2/2, r = 2/3 -> 2*(2/3)/(5/3) = 0.8. BLEU: [may, 2023] (c=2) vs
    #    [7, may, 2023] (r=3): P1 = 2/2, BP = exp(1 - 3/2) = exp(-0.5) = 0.6065306597126334.
    ("May 2023", "7 May 2023", 0.8, 0.6065306597126334),
    # 4. longer prediction. F1: {she, moved, to, denver} vs {denver}: p = 1/4, r = 1 -> 2*(1/4)/(5/4) = 0.4.
    #    BLEU: c = 4, r = 1, matches 1: P1 = 1/4, BP = 1 -> 0.25.
    ("She moved to Denver", "Denver", 0.4, 0.25),
    # 5. repeated tokens. F1: sets {the, cat} vs {the, cat, sat}: p = 1, r = 2/3 -> 0.8. BLEU: counts
    #    the:3 cat:1 vs the:1 cat:1 sat:1, clipped matches 1 + 1 = 2, c = 4: P1 = 2/4, c > r = 3 -> 0.5.
    ("the the the cat", "the cat sat", 0.8, 0.5),
    # 6. no overlap: F1 0; BLEU: zero unigram matches -> NLTK returns 0 before any smoothing.
    ("Boston", "Denver", 0.0, 0.0),
    # 7. same date, other format. F1: {7, may, 2023} both -> 1. BLEU: [7, may, 2023] (c=3) vs
    #    [may, 7, ",", 2023] (r=4): matches 3, P1 = 1, BP = exp(1 - 4/3) = exp(-1/3) = 0.7165313105737893.
    ("7 May 2023", "May 7, 2023", 1.0, 0.7165313105737893),
    # 8. contraction. F1: {it's, denver} vs {denver}: p = 1/2, r = 1 -> 2/3. BLEU: Treebank splits
    #    [it, 's, denver] (c=3) vs [denver] (r=1): P1 = 1/3, BP = 1 -> 1/3.
    ("it's Denver", "Denver", 2 / 3, 1 / 3),
    # 9. contraction vs spelled out. F1: {it's, a, dog} vs {it, is, a, dog}: common {a, dog}: p = 2/3,
    #    r = 2/4 -> 2*(1/3)/(7/6) = 4/7. BLEU: [it, 's, a, dog] vs [it, is, a, dog]: matches it, a, dog = 3,
    #    c = r = 4: P1 = 3/4, BP = 1 -> 0.75.
    ("it's a dog", "it is a dog", 4 / 7, 0.75),
    # 10. empty prediction -> 0 for both (F1: empty set; BLEU: guarded, NLTK would also give 0).
    ("", "Denver", 0.0, 0.0),
    # 11. empty gold -> 0 for both.
    ("Denver", "", 0.0, 0.0),
    # 12. case only. F1: {denver} both -> 1. BLEU: [denver] vs [denver], P1 = 1, BP = 1 -> 1.
    ("DENVER", "denver", 1.0, 1.0),
    # 13. exclamation. F1: "!" -> space: {yes} both -> 1. BLEU: [yes, "!"] (c=2) vs [yes] (r=1):
    #     P1 = 1/2, BP = 1 -> 0.5.
    ("Yes!", "yes", 1.0, 0.5),
    # 14. brevity, several words. F1: {a, red, car} vs {a, big, red, sports, car}: p = 1, r = 3/5 ->
    #     2*(3/5)/(8/5) = 0.75. BLEU: c = 3, r = 5, matches 3: P1 = 1, BP = exp(1 - 5/3) = exp(-2/3)
    #     = 0.513417119032592.
    ("a red car", "a big red sports car", 0.75, 0.513417119032592),
    # 15. gold repeats a word. F1: sets {cat} both -> 1. BLEU: [cat] (c=1) vs [cat, cat] (r=2): P1 = 1/1,
    #     BP = exp(1 - 2/1) = exp(-1) = 0.36787944117144233.
    ("cat", "cat cat", 1.0, 0.36787944117144233),
    # 16. abbreviation kept whole (as punkt would). F1: "." -> space: {dr, smith} vs {smith}: p = 1/2,
    #     r = 1 -> 2/3. BLEU: [dr., smith] (c=2) vs [smith] (r=1): P1 = 1/2, BP = 1 -> 0.5.
    ("Dr. Smith", "Smith", 2 / 3, 0.5),
    # 17. two sentences: the inner period becomes a token. F1: {he, left, then, she, came} vs
    #     {she, came}: p = 2/5, r = 1 -> 2*(2/5)/(7/5) = 4/7. BLEU: [he, left, ., then, she, came, .]
    #     (c=7) vs [she, came] (r=2): P1 = 2/7, BP = 1 -> 2/7.
    ("He left. Then she came.", "she came", 4 / 7, 2 / 7),
]


@pytest.mark.parametrize(("prediction", "gold", "f1", "bleu"), TABLE)
def test_metrics_table(prediction, gold, f1, bleu):
    assert f1_score(prediction, gold) == pytest.approx(f1, abs=1e-6)
    assert bleu1(prediction, gold) == pytest.approx(bleu, abs=1e-6)


@pytest.mark.parametrize(("prediction", "gold", "f1", "bleu"), TABLE)
def test_score_answer_bundles_the_same_numbers(prediction, gold, f1, bleu):
    scores = score_answer(prediction, gold)
    assert set(scores) == {"f1", "bleu1", "em"}
    assert scores["f1"] == pytest.approx(f1, abs=1e-6)
    assert scores["bleu1"] == pytest.approx(bleu, abs=1e-6)
    assert scores["em"] == exact_match(prediction, gold)


SINGLE_SENTENCES = [
    "7 May 2023",
    "May 7, 2023.",
    "it's a dog",
    "They weren't home; she'd left!",
    "Dr. Smith",
    "J. K. Rowling",
    "the U.S. Army",
    "3.5 miles (about 5.6 km)",
    'She said "pottery class" was fun?',
    "wait... what",
    "e.g. painting, hiking & camping",
    "Mr. and Mrs. Lee's $20 gift",
    "I can't, won't, gonna go",
    "caroline's LGBTQ support-group -- on 8/5/2023",
    "",
    "   ",
]


@pytest.mark.parametrize("text", SINGLE_SENTENCES)
def test_tokenize_matches_word_tokenize_on_one_sentence(text):
    # preserve_line=True is word_tokenize without punkt: the same Treebank tokenizer on the whole string.
    assert tokenize(text) == nltk.word_tokenize(text, preserve_line=True)
    assert tokenize(text.lower()) == nltk.word_tokenize(text.lower(), preserve_line=True)


def test_tokenize_splits_sentences_like_punkt():
    assert tokenize("He left. Then she came!") == ["He", "left", ".", "Then", "she", "came", "!"]
    assert tokenize("i met dr. smith. he was kind") == ["i", "met", "dr.", "smith", ".", "he", "was", "kind"]
