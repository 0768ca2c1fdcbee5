"""Typed records that cross package boundaries.

Data flows one way: dialogue (Conversation/Turn) -> Fact -> Operation -> MemoryEntry in a bank ->
ScoredMemory (retrieval) -> Answer. Every stage returns these records, never backend-shaped dicts.
"""

from __future__ import annotations

import enum
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Any Python str made storable and tokenizable: surrogate pairs written as two code points are joined,
    lone surrogates (e.g. from `surrogateescape`d bytes on a command line) become U+FFFD. Everything else,
    NUL and control characters included, is kept as is."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def normalise_time(moment: datetime | None) -> datetime | None:
    """Dialogue times are naive and in UTC everywhere: an aware time is converted to UTC and its zone
    dropped; a naive one is read as UTC already (LoCoMo's times carry no zone). Any two then compare."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def _normalise_fields(record: object, texts: tuple[str, ...], times: tuple[str, ...] = ()) -> None:
    """Normalise text and time fields of a frozen record in place, once, where it is made."""
    for name in texts:
        value = getattr(record, name)
        if isinstance(value, str):
            object.__setattr__(record, name, clean_text(value))
    for name in times:
        object.__setattr__(record, name, normalise_time(getattr(record, name)))


class Category(enum.IntEnum):
    """LoCoMo question category. The integer is what the file stores.

    Two naming conventions exist (reference notes, section 3): LoCoMo's own, and the one used in the
    Mem0 and Memory-R1 tables. Only the latter reproduces the published "Overall" numbers.
    """

    MULTI_HOP = 1
    TEMPORAL = 2
    OPEN_DOMAIN = 3
    SINGLE_HOP = 4
    ADVERSARIAL = 5

    @property
    def locomo_label(self) -> str:
        return _LOCOMO_LABELS[self]

    @property
    def paper_label(self) -> str:
        """Column name in the Mem0 / Memory-R1 tables (category 5 is excluded there)."""
        return _PAPER_LABELS[self]


_LOCOMO_LABELS = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
_PAPER_LABELS = {1: "Single Hop", 2: "Temporal", 3: "Multi-Hop", 4: "Open Domain", 5: "Adversarial"}


# ---------------------------------------------------------------- dialogue


@dataclass(frozen=True)
class Turn:
    speaker: str
    dia_id: str  # e.g. "D1:3"
    text: str
    session: int  # 1-based session index
    timestamp: str  # the session's date-time string, e.g. "1:56 pm on 8 May, 2023"
    occurred_at: datetime | None = None  # parsed timestamp, None if unparsable
    image_caption: str | None = None  # LoCoMo's blip_caption: the shared image, not part of `text`

    def __post_init__(self) -> None:
        _normalise_fields(self, ("speaker", "dia_id", "text", "timestamp", "image_caption"), ("occurred_at",))

    def render(self) -> str:
        """The turn as the agents see it: speaker, words, and any shared photo."""
        line = f"{self.speaker}: {self.text}"
        if self.image_caption:
            line += f" [shared a photo of {self.image_caption}]"
        return line


@dataclass(frozen=True)
class Session:
    index: int
    timestamp: str
    occurred_at: datetime | None
    turns: tuple[Turn, ...]

    def __post_init__(self) -> None:
        _normalise_fields(self, ("timestamp",), ("occurred_at",))


@dataclass(frozen=True)
class QAItem:
    sample_id: str
    index: int  # 0-based position in the sample's full qa list (category 5 included)
    question: str
    answer: str | None  # None for adversarial items that only carry `adversarial_answer`
    category: Category | None  # LoCoMo's category; None for other benchmarks (see question_type)
    evidence: tuple[str, ...]  # normalised dia_ids; malformed upstream ids are split/repaired
    adversarial_answer: str | None = None
    dataset: str = "locomo"  # "locomo", "longmemeval" or "msc": decides how the answer is scored
    question_type: str | None = None  # LongMemEval's type, e.g. "temporal-reasoning"; None for LoCoMo
    abstention: bool = False  # LongMemEval "_abs" item: the history does not hold the answer
    question_date: str | None = None  # when the question is asked (LongMemEval), as the file writes it

    @property
    def asked(self) -> str:
        """The question as the answering system sees it: with the date it is asked on, when known
        (LongMemEval's temporal questions count days from that date)."""
        return f"(Asked on {self.question_date}) {self.question}" if self.question_date else self.question

    def __post_init__(self) -> None:
        _normalise_fields(self, ("question", "answer", "adversarial_answer"))


@dataclass(frozen=True)
class Conversation:
    sample_id: str
    speaker_a: str
    speaker_b: str
    sessions: tuple[Session, ...]
    qa: tuple[QAItem, ...] = ()

    @property
    def speakers(self) -> tuple[str, str]:
        return (self.speaker_a, self.speaker_b)

    @property
    def turns(self) -> tuple[Turn, ...]:
        return tuple(t for s in self.sessions for t in s.turns)


# ---------------------------------------------------------------- memory


@dataclass(frozen=True)
class Fact:
    """One short statement extracted from a turn, owned by the speaker it is about."""

    text: str
    owner: str
    timestamp: str
    occurred_at: datetime | None = None
    source_turn_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _normalise_fields(self, ("text", "owner", "timestamp"), ("occurred_at",))


class Event(str, enum.Enum):
    """Memory Manager operations. NOOP is spelled NONE in the paper's output format."""

    ADD = "ADD"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    NOOP = "NOOP"


class Rejection(str, enum.Enum):
    """Why an operation the model wrote became a NOOP: the typed signal beside the human-readable reason.

    UNPARSABLE means the whole output had no usable structure (RL penalises it, ingest counts it); the
    others reject one operation of an otherwise readable output.
    """

    UNPARSABLE = "unparsable"
    EMPTY = "empty"  # a readable output with no operations
    NOT_OBJECT = "not-object"
    UNKNOWN_EVENT = "unknown-event"
    MISSING_TEXT = "missing-text"  # ADD or UPDATE without text
    DUPLICATE_ADD = "duplicate-add"  # ADD of a text already stored or already added in this output
    UNKNOWN_ID = "unknown-id"  # UPDATE/DELETE of an id (or fact number) the model was not shown
    SECOND_CHANGE = "second-change"  # a second UPDATE/DELETE of the same memory
    UNCHANGED = "unchanged"  # UPDATE to the memory's own text
    STORE_ERROR = "store-error"  # the bank could not apply it (vanished target, unstorable embedding)


@dataclass(frozen=True)
class Operation:
    """One decision of the Memory Manager, already resolved to store ids.

    For NOOP, `reason` says why (model chose it, unknown id, missing text, unparsable output, ...) and
    `rejection` classifies it when the NOOP replaced an operation the model wrote (None for its own NONE).
    """

    event: Event
    memory_id: int | None = None  # target for UPDATE/DELETE (and NOOP on a known memory)
    text: str | None = None  # new text for ADD/UPDATE
    old_text: str | None = None  # what the model claimed the memory said (UPDATE), informational
    reason: str | None = None
    rejection: Rejection | None = None

    @property
    def unparsable(self) -> bool:
        return self.rejection is Rejection.UNPARSABLE

    def __post_init__(self) -> None:
        _normalise_fields(self, ("text", "old_text", "reason"))


@dataclass(frozen=True)
class Provenance:
    """Who decided a change: recorded in every history row and result."""

    agent: str  # "manager", "user", "undo", ...
    model: str = ""
    prompt_version: str = ""


@dataclass(frozen=True)
class MemoryEntry:
    id: int
    owner: str  # namespace, e.g. "conv-26:Caroline"
    text: str
    timestamp: str  # dialogue time string as shown to the agents
    occurred_at: datetime | None
    created_at: datetime  # wall-clock, UTC
    updated_at: datetime
    source_turn_ids: tuple[str, ...] = ()
    deleted: bool = False

    def __post_init__(self) -> None:
        _normalise_fields(self, (), ("occurred_at",))


@dataclass(frozen=True)
class ScoredMemory:
    entry: MemoryEntry
    score: float  # cosine similarity


@dataclass(frozen=True)
class HistoryRecord:
    id: int
    memory_id: int | None  # None for a NOOP that touched no memory
    owner: str
    event: str  # an Event value, or "UNDO"
    before_text: str | None
    after_text: str | None
    provenance: Provenance
    reason: str | None
    at: datetime
    undone: bool = False


# ---------------------------------------------------------------- generation and answers


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.latency_s + other.latency_s,
        )


@dataclass(frozen=True)
class Answer:
    question: str
    answer: str
    selected_memory_ids: tuple[int, ...]
    retrieved: tuple[ScoredMemory, ...]
    raw_output: str
    prompt_version: str
    usage: Usage = field(default_factory=Usage)
    parse_error: str | None = None
    search_s: float = 0.0  # retrieval time (query embedding + bank search)
    dropped_memories: int = 0  # retrieved but left out of the prompt to fit the model's window


_SEP = "\x1f"


class ScopeError(ValueError):
    """A scope (or other API input) that cannot be used: no id given, empty or malformed ids."""


@dataclass(frozen=True)
class Scope:
    """Whose memories: at least one of user, agent, run. A first-class record, mapped to one store key.

    Keys, our choice: a scope with only a user id is stored under that id verbatim, which is how the LoCoMo
    speakers' banks (`conv-26:Caroline`) are keyed, so evaluation banks and RL datasets are unchanged; any
    other combination is `user<US>agent=...<US>run=...` (US = the ASCII unit separator), and ids may not
    contain control characters, so two scopes never share a key.
    """

    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None

    def __post_init__(self) -> None:
        ids = (self.user_id, self.agent_id, self.run_id)
        if all(i is None for i in ids):
            raise ScopeError("a scope needs at least one of user_id, agent_id, run_id")
        for name, value in zip(("user_id", "agent_id", "run_id"), ids, strict=True):
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                raise ScopeError(f"{name} must be a non-empty string")
            if any(ord(c) < 32 for c in value) or len(value) > 256:
                raise ScopeError(f"{name} must be at most 256 characters with no control characters")

    @property
    def key(self) -> str:
        if self.agent_id is None and self.run_id is None:
            return str(self.user_id)
        return _SEP.join((self.user_id or "", f"agent={self.agent_id or ''}", f"run={self.run_id or ''}"))

    @classmethod
    def from_key(cls, key: str) -> Scope:
        if _SEP not in key:
            return cls(user_id=key)
        user, agent, run = key.split(_SEP)
        return cls(user or None, agent.removeprefix("agent=") or None, run.removeprefix("run=") or None)

    @classmethod
    def for_speaker(cls, sample_id: str, speaker: str) -> Scope:
        """The LoCoMo speaker's scope: one per speaker per conversation, as the paper keeps one bank each."""
        return cls(user_id=f"{sample_id}:{speaker}")

    @property
    def label(self) -> str:
        """How the Answer Agent's prompt names this scope's memories."""
        return self.user_id or self.agent_id or self.run_id or ""

    def to_json(self) -> dict[str, str | None]:
        return asdict(self)



def owner_id(sample_id: str, speaker: str) -> str:
    """Bank namespace of one speaker in one conversation (the paper keeps one bank per speaker): the key
    of that speaker's `Scope`."""
    return Scope.for_speaker(sample_id, speaker).key
