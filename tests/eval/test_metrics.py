"""F1 and EM as the Mem0 harness computes them, with values worked out by hand."""

import pytest

from memory_r1.eval.metrics import exact_match, f1_score


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
