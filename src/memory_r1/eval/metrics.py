"""Answer metrics as the Mem0 harness defines them (reference notes, section 4).

One module serves both evaluation and RL rewards. F1 compares token *sets* after lowercasing and
turning . , ! ? into spaces: no stemming, no article removal, exactly like the harness the paper follows.
"""

from __future__ import annotations

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
