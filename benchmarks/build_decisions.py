"""Build benchmarks/data/manager-decisions.jsonl: the Memory Manager decision benchmark.

    python benchmarks/build_decisions.py [--data locomo10.json] \
        [--out benchmarks/data/manager-decisions.jsonl]

Deterministic: the same LoCoMo file gives the same cases. LoCoMo (CC BY-NC) cases are stored as references
(sample_id, dia_ids) chosen by the rules below and rebuilt into text by `memory_r1.eval.decisions` at run
time; synthetic cases (decision_scenarios.py, our text) are stored in full. See benchmarks/data/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decision_scenarios import DISTRACTORS, NAMES, SCENARIOS

from memory_r1.data import find_locomo, load_locomo
from memory_r1.records import Category, Conversation, Turn

ADD_PER_CONVERSATION, DUPLICATES_PER_CONVERSATION, CHATTER_PER_CONVERSATION = 10, 3, 3
STOPWORDS = frozenset(["that", "this", "with", "have", "from", "they", "them", "then", "than", "what", "when",
                       "where", "which", "while", "about", "would", "could", "should", "there", "their",
                       "these", "those", "been", "were", "will", "your", "yours", "just", "really", "also",
                       "very", "much", "some", "more", "most", "into", "over", "like", "know", "think",
                       "going", "getting", "doing", "make", "made", "feel", "felt", "time", "good", "great",
                       "thanks", "thank", "yeah", "pretty", "things", "thing", "always", "never", "still",
                       "even", "well", "sure", "lots", "love"])
PLEASANTRY = re.compile(
    r"^(wow|thanks|thank you|cool|awesome|great|nice|bye|take care|see you|haha|congrats|"
    r"congratulations|aw+|glad|sounds|yeah|totally|absolutely|you too|good luck|no problem|lol|"
    r"same|agreed|exactly|me too|sure)\b",
    re.IGNORECASE,
)
FIRST_PERSON = re.compile(r"\b(I|I'm|I've|I'll|my|me|we|our|us)\b")


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4 and w not in STOPWORDS}


def is_content(turn: Turn, evidence: set[str]) -> bool:
    """Rule: a statement worth remembering: a turn that one of LoCoMo's questions (categories 1-4) cites as
    evidence, i.e. one the benchmark later asks about; at least 6 words and not a question."""
    return turn.dia_id in evidence and len(turn.text.split()) >= 6 and "?" not in turn.text


def is_chatter(turn: Turn) -> bool:
    """Rule: small talk: at most 6 words, opens with a pleasantry, no question, nothing about the speaker."""
    text = turn.text
    return (
        len(text.split()) <= 6
        and "?" not in text
        and not turn.image_caption
        and bool(PLEASANTRY.match(text))
        and not FIRST_PERSON.search(text)
        and not re.search(r"\d", text)
    )


def spaced(items: list, count: int, offset: float = 0.5) -> list:
    """`count` items evenly spaced through `items` (deterministic)."""
    if not items:
        return []
    return [items[int((j + offset) * len(items) / count) % len(items)] for j in range(count)]


def unrelated(fact: Turn, pool: list[Turn], k: int, start: int) -> list[Turn]:
    """Rule: k turns of the same speaker from other sessions sharing no content word with the fact."""
    words = content_words(fact.text)
    picked: list[Turn] = []
    for i in range(len(pool)):
        if len(picked) == k:
            break
        turn = pool[(start + i * 7) % len(pool)]
        if turn.session != fact.session and not words & content_words(turn.text) and turn not in picked:
            picked.append(turn)
    return picked


def locomo_cases(conversation: Conversation) -> list[dict]:
    cases: list[dict] = []
    turns = conversation.turns
    evidence = {d for q in conversation.qa if q.category != Category.ADVERSARIAL for d in q.evidence}
    content = [t for t in turns if is_content(t, evidence)]
    by_speaker = {s: [t for t in content if t.speaker == s] for s in conversation.speakers}

    def row(kind: str, rule: str, fact: Turn, memories: list[Turn], event: str, target: int | None) -> dict:
        return {"id": f"{conversation.sample_id}-{kind}-{fact.dia_id}", "source": "locomo", "kind": kind,
                "labelled_by": f"rule:{rule}", "event": event, "also": [], "target": target,
                "sample_id": conversation.sample_id, "fact_ref": fact.dia_id,
                "memory_refs": [m.dia_id for m in memories]}

    for j, fact in enumerate(spaced(content, ADD_PER_CONVERSATION)):
        memories = unrelated(fact, by_speaker[fact.speaker], j % 4, start=j * 13)
        cases.append(row("add-new", "evidence-turn-vs-unrelated-turns", fact, memories, "ADD", None))
    for j, fact in enumerate(spaced(content, DUPLICATES_PER_CONVERSATION, offset=0.25)):
        others = unrelated(fact, by_speaker[fact.speaker], j % 3, start=j * 11 + 5)
        position = j % (len(others) + 1)
        memories = others[:position] + [fact] + others[position:]
        cases.append(row("duplicate", "turn-already-stored-verbatim", fact, memories, "NOOP", position))
    chatter = [t for t in turns if is_chatter(t)]
    for j, fact in enumerate(spaced(chatter, CHATTER_PER_CONVERSATION)):
        pool = by_speaker[fact.speaker]
        memories = [pool[(j * 17 + 3 + i * 5) % len(pool)] for i in range(j % 3)] if pool else []
        cases.append(row("chatter", "short-pleasantry", fact, memories, "NOOP", None))
    return list({c["id"]: c for c in cases}.values())  # a turn picked twice by one rule counts once


EVENT_OF_KIND = {"refine": ("UPDATE", []), "change": ("UPDATE", []), "correct": ("UPDATE", []),
                 "contradict": ("DELETE", ["UPDATE"]), "paraphrase": ("NOOP", []), "related": ("ADD", []),
                 "chatter": ("NOOP", [])}


def synthetic_cases() -> list[dict]:
    cases = []
    for k, (kind, scenarios) in enumerate(SCENARIOS.items()):
        event, also = EVENT_OF_KIND[kind]
        for i, (topic, memory, fact, _merged) in enumerate(scenarios):
            name = NAMES[(i * 3 + k * 7) % len(NAMES)]
            n_distractors = i % 3
            distractors = [d.format(n=name) for t, d in (DISTRACTORS[(i * 5 + j * 7 + k) % len(DISTRACTORS)]
                                                       for j in range(n_distractors)) if t != topic]
            if memory:
                position = i % (len(distractors) + 1)
                memories = distractors[:position] + [memory.format(n=name)] + distractors[position:]
            else:
                position, memories = None, distractors
            target = position if event in ("UPDATE", "DELETE", "NOOP") and memory else None
            cases.append({"id": f"syn-{kind}-{i + 1:02d}", "source": "synthetic", "kind": kind,
                          "labelled_by": "hand",
                          "event": event, "also": also, "target": target, "fact": fact.format(n=name),
                          "memories": memories})
    return cases


def assign_splits(cases: list[dict]) -> None:
    """Rule: within each kind, order by sha256 of the id; every third case is dev, the rest test."""
    for kind in sorted({c["kind"] for c in cases}):
        group = sorted((c for c in cases if c["kind"] == kind),
                       key=lambda c: hashlib.sha256(c["id"].encode()).hexdigest())
        for i, case in enumerate(group):
            case["split"] = "dev" if i % 3 == 0 else "test"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/data/manager-decisions.jsonl"))
    parser.add_argument("--show", type=int, default=0,
                        help="print the text of N LoCoMo cases per kind (spot-check)")
    parser.add_argument("--skip", type=int, default=0, help="start the spot-check sample at this case")
    args = parser.parse_args()
    conversations = load_locomo(find_locomo(args.data))
    cases = [c for conv in conversations for c in locomo_cases(conv)] + synthetic_cases()
    assign_splits(cases)
    order = ["id", "split", "source", "kind", "labelled_by", "event", "also", "target"]
    lines = [
        json.dumps({k: c[k] for k in order} | {k: v for k, v in c.items() if k not in order}) for c in cases
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    counts: dict[str, int] = {}
    for c in cases:
        counts[f"{c['kind']}/{c['split']}"] = counts.get(f"{c['kind']}/{c['split']}", 0) + 1
    print(f"{len(cases)} cases -> {args.out}: {json.dumps(counts, sort_keys=True)}")
    if args.show:
        turns = {(conv.sample_id, t.dia_id): t.render() for conv in conversations for t in conv.turns}
        for kind in ("add-new", "duplicate", "chatter"):
            for c in [c for c in cases if c["kind"] == kind and c["source"] == "locomo"][
                args.skip :: max(1, 30 // args.show)
            ][: args.show]:
                print(
                    f"--- {c['id']} {c['event']} target={c['target']}\n"
                    f"  fact: {turns[(c['sample_id'], c['fact_ref'])]}"
                )
                for ref in c["memory_refs"]:
                    print(f"  mem:  {turns[(c['sample_id'], ref)]}")


if __name__ == "__main__":
    main()
