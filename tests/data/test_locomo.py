"""LoCoMo loader: the real file's numbers and quirks, bad inputs, file lookup and download."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from memory_r1.data import (
    LOCOMO_ENV_VAR,
    LOCOMO_SHA256,
    DatasetError,
    DatasetNotFoundError,
    download_locomo,
    find_locomo,
    get_conversation,
    load_locomo,
    normalize_evidence,
    parse_locomo_datetime,
    parse_session_range,
    select_sessions,
)
from memory_r1.data import locomo as locomo_module
from memory_r1.records import Category, Conversation

LOCOMO_PATH = Path(__file__).parents[2].parent / "shared/data/locomo/locomo10.json"
needs_locomo = pytest.mark.skipif(
    not LOCOMO_PATH.is_file(), reason=f"real LoCoMo file not found at {LOCOMO_PATH}"
)
CANONICAL_ID = re.compile(r"D[1-9]\d*:[1-9]\d*")


@pytest.fixture(scope="module")
def convs() -> list[Conversation]:
    if not LOCOMO_PATH.is_file():
        pytest.skip(f"real LoCoMo file not found at {LOCOMO_PATH}")
    return load_locomo(LOCOMO_PATH)


def qa_item(convs: list[Conversation], sample_id: str, index: int):
    return get_conversation(convs, sample_id).qa[index]


# ---------------------------------------------------------------- the real file


def test_totals(convs: list[Conversation]) -> None:
    assert len(convs) == 10
    assert [c.sample_id for c in convs] == [
        "conv-26", "conv-30", "conv-41", "conv-42", "conv-43",
        "conv-44", "conv-47", "conv-48", "conv-49", "conv-50",
    ]  # fmt: skip
    assert sum(len(c.sessions) for c in convs) == 272
    assert sum(len(c.turns) for c in convs) == 5882
    assert sum(len(c.qa) for c in convs) == 1986


def test_category_counts_in_both_conventions(convs: list[Conversation]) -> None:
    counts = Counter(q.category for c in convs for q in c.qa)
    assert {int(k): v for k, v in counts.items()} == {1: 282, 2: 321, 3: 96, 4: 841, 5: 446}
    by_locomo = {k.locomo_label: v for k, v in counts.items()}
    by_paper = {k.paper_label: v for k, v in counts.items()}
    assert by_locomo["multi-hop"] == by_paper["Single Hop"] == 282
    assert by_locomo["open-domain"] == by_paper["Multi-Hop"] == 96
    assert by_locomo["single-hop"] == by_paper["Open Domain"] == 841
    assert by_locomo["temporal"] == by_paper["Temporal"] == 321


def test_conv26_ignores_date_keys_without_sessions(convs: list[Conversation]) -> None:
    conv = get_conversation(convs, "conv-26")
    assert [s.index for s in conv.sessions] == list(range(1, 20))
    assert len(conv.turns) == 419
    assert conv.sessions[0].timestamp == "1:56 pm on 8 May, 2023"
    assert conv.sessions[0].occurred_at == datetime(2023, 5, 8, 13, 56)


def test_turns_carry_their_session_time_and_ids_in_order(convs: list[Conversation]) -> None:
    for conv in convs:
        for session in conv.sessions:
            assert session.occurred_at is not None
            for position, turn in enumerate(session.turns, start=1):
                assert turn.dia_id == f"D{session.index}:{position}"
                assert turn.session == session.index
                assert turn.timestamp == session.timestamp
                assert turn.occurred_at == session.occurred_at
                assert turn.speaker in conv.speakers


def test_int_answers_become_str(convs: list[Conversation]) -> None:
    assert qa_item(convs, "conv-26", 1).answer == "2022"
    assert qa_item(convs, "conv-26", 40).answer == "2"
    assert qa_item(convs, "conv-26", 75).answer == "3"
    assert all(isinstance(q.answer, str) for c in convs for q in c.qa if q.answer is not None)


def test_adversarial_items(convs: list[Conversation]) -> None:
    adversarial = [q for c in convs for q in c.qa if q.category is Category.ADVERSARIAL]
    assert len(adversarial) == 446
    assert all(q.adversarial_answer for q in adversarial)
    assert sum(q.answer is None for q in adversarial) == 444
    both = qa_item(convs, "conv-26", 167)  # one of the two that carry both answers
    assert (both.answer, both.adversarial_answer) == ("No", "Yes")
    assert all(q.answer is not None for c in convs for q in c.qa if q.category != 5)


def test_qa_index_is_position_in_full_list(convs: list[Conversation]) -> None:
    for conv in convs:
        assert [q.index for q in conv.qa] == list(range(len(conv.qa)))
        assert all(q.sample_id == conv.sample_id for q in conv.qa)


def test_malformed_evidence_is_repaired(convs: list[Conversation]) -> None:
    assert qa_item(convs, "conv-26", 37).evidence == ("D8:6", "D9:17")
    assert "D11:26" in qa_item(convs, "conv-43", 18).evidence
    assert qa_item(convs, "conv-42", 88).evidence == ("D1:18", "D1:20")  # bare "D" dropped
    assert qa_item(convs, "conv-49", 31).evidence == ("D9:1", "D4:4", "D4:6")
    assert qa_item(convs, "conv-49", 38).evidence == ("D22:1", "D22:2", "D9:10", "D9:11")
    assert qa_item(convs, "conv-49", 46).evidence == ("D21:18", "D21:22", "D11:15", "D11:19")
    assert "D30:5" in qa_item(convs, "conv-50", 69).evidence
    assert all(CANONICAL_ID.fullmatch(e) for c in convs for q in c.qa for e in q.evidence)


def test_evidence_points_at_real_turns_except_two_upstream_dangling_ids(
    convs: list[Conversation],
) -> None:
    turn_ids = {c.sample_id: {t.dia_id for t in c.turns} for c in convs}
    dangling = [
        (c.sample_id, q.index, e)
        for c in convs
        for q in c.qa
        for e in q.evidence
        if e not in turn_ids[c.sample_id]
    ]
    assert dangling == [("conv-42", 58, "D10:19"), ("conv-47", 38, "D4:36")]


def test_empty_evidence_lists_kept(convs: list[Conversation]) -> None:
    empty = [(q.sample_id, q.index) for c in convs for q in c.qa if not q.evidence]
    assert empty == [("conv-26", 30), ("conv-26", 46), ("conv-50", 39), ("conv-50", 42)]


def test_duplicate_questions_kept(convs: list[Conversation]) -> None:
    counts = Counter((q.sample_id, q.question) for c in convs for q in c.qa)
    assert sum(n - 1 for n in counts.values() if n > 1) == 12
    assert counts[("conv-30", "What did Gina receive from a dance contest?")] == 2


def test_image_captions_are_separate_from_text(convs: list[Conversation]) -> None:
    captioned = [t for c in convs for t in c.turns if t.image_caption]
    assert len(captioned) == 1226
    assert all(t.image_caption not in t.text for t in captioned)
    turn = get_conversation(convs, "conv-26").sessions[0].turns[4]
    assert turn.dia_id == "D1:5"
    assert turn.image_caption == "a photo of a dog walking past a wall with a painting of a woman"
    assert turn.render().endswith(f"[shared a photo of {turn.image_caption}]")


# ---------------------------------------------------------------- small parsers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1:56 pm on 8 May, 2023", datetime(2023, 5, 8, 13, 56)),
        ("12:28 am on 8 November, 2023", datetime(2023, 11, 8, 0, 28)),
        ("12:04 pm on 1 January, 2024", datetime(2024, 1, 1, 12, 4)),
        ("10:55 AM on 24 June, 2022", datetime(2022, 6, 24, 10, 55)),
        ("  9:55 am  on 22 October, 2023 ", datetime(2023, 10, 22, 9, 55)),
        ("yesterday", None),
        ("", None),
        ("13:61 pm on 40 May, 2023", None),
    ],
)
def test_parse_locomo_datetime(text: str, expected: datetime | None) -> None:
    assert parse_locomo_datetime(text) == expected


def test_normalize_evidence() -> None:
    raw = ["D8:6; D9:17", "D:11:26", "D30:05", "D", "D1:3", "D1:3", "D9:1 D4:4"]
    assert normalize_evidence(raw) == ("D8:6", "D9:17", "D11:26", "D30:5", "D1:3", "D9:1", "D4:4")
    assert normalize_evidence([]) == ()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("2", {2}), ("1-3", {1, 2, 3}), ("1,3-4", {1, 3, 4}), (" 1 , 3 - 4 ", {1, 3, 4}), ("2,2", {2})],
)
def test_parse_session_range(spec: str, expected: set[int]) -> None:
    assert parse_session_range(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty session range"),
        ("a", "'a' is not a number"),
        ("1,,2", "'' is not a number"),
        ("3-1", "goes backwards"),
        ("0-2", "numbered from 1"),
        ("1-", "is not a number"),
    ],
)
def test_parse_session_range_errors(spec: str, message: str) -> None:
    with pytest.raises(DatasetError, match=re.escape(message)):
        parse_session_range(spec)


# ---------------------------------------------------------------- selecting


def test_get_conversation_unknown_lists_ids(convs: list[Conversation]) -> None:
    with pytest.raises(DatasetError, match=r"unknown conversation 'conv-99'; available: conv-26, conv-30"):
        get_conversation(convs, "conv-99")


def test_select_sessions(convs: list[Conversation]) -> None:
    conv = get_conversation(convs, "conv-26")
    small = select_sessions(conv, "1-2,4")
    assert [s.index for s in small.sessions] == [1, 2, 4]
    kept_ids = {t.dia_id for t in small.turns}
    assert small.qa and all(set(q.evidence) <= kept_ids for q in small.qa)
    assert len(small.qa) < len(conv.qa)
    assert select_sessions(conv, [1], qa="all").qa == conv.qa
    assert select_sessions(conv, {1}, qa="none").qa == ()
    with pytest.raises(DatasetError, match=r"conv-26 has no session\(s\) 20, 21; it has sessions 1-19"):
        select_sessions(conv, "19-21")


# ---------------------------------------------------------------- bad input


def minimal_sample(sample_id: str = "conv-1") -> dict[str, Any]:
    return {
        "sample_id": sample_id,
        "conversation": {
            "speaker_a": "Ann",
            "speaker_b": "Bob",
            "session_2_date_time": "9:00 am on 2 May, 2023",
            "session_2": [{"speaker": "Bob", "dia_id": "D2:1", "text": "Later."}],
            "session_10_date_time": "9:00 am on 3 May, 2023",
            "session_10": [{"speaker": "Ann", "dia_id": "D10:1", "text": "Much later."}],
            "session_1_date_time": "9:00 am on 1 May, 2023",
            "session_1": [
                {"speaker": "Ann", "dia_id": "D1:1", "text": "Hi!"},
                {"speaker": "Bob", "dia_id": "D1:2", "text": "Look.", "blip_caption": "a cat"},
            ],
            "session_3_date_time": "9:00 am on 4 May, 2023",
        },
        "qa": [
            {"question": "Who said hi?", "answer": "Ann", "evidence": ["D1:1"], "category": 4},
            {"question": "What year?", "answer": 2023, "evidence": [], "category": 2},
            {"question": "Bob's cat?", "adversarial_answer": "Tom", "evidence": ["D1:2"], "category": 5},
        ],
    }


def write_json(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_minimal_file_loads(tmp_path: Path) -> None:
    (conv,) = load_locomo(write_json(tmp_path, [minimal_sample()]))
    assert [s.index for s in conv.sessions] == [1, 2, 10]  # numeric order; date-only session 3 ignored
    assert conv.sessions[0].turns[1].image_caption == "a cat"
    assert conv.sessions[0].turns[1].text == "Look."
    assert [q.answer for q in conv.qa] == ["Ann", "2023", None]
    assert conv.qa[2].adversarial_answer == "Tom"
    assert conv.qa[2].category is Category.ADVERSARIAL


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(DatasetError, match=re.escape(f"LoCoMo file {missing} does not exist")):
        load_locomo(missing)
    with pytest.raises(DatasetError, match="is a directory"):
        load_locomo(tmp_path)


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[{"sample_id": "x",\n  oops}]', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad\.json is not valid JSON: .* at line 2 column 3"):
        load_locomo(path)


def test_top_level_not_a_list(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="top level must be a list of samples, got dict"):
        load_locomo(write_json(tmp_path, {"conv-1": minimal_sample()}))


def _break(sample: dict[str, Any], edit: str) -> None:
    conversation = sample["conversation"]
    match edit:
        case "no_sample_id":
            del sample["sample_id"]
        case "no_question":
            del sample["qa"][1]["question"]
        case "no_answer":
            del sample["qa"][0]["answer"]
        case "category_str":
            sample["qa"][0]["category"] = "4"
        case "category_9":
            sample["qa"][0]["category"] = 9
        case "evidence_str":
            sample["qa"][0]["evidence"] = "D1:1"
        case "no_date":
            del conversation["session_2_date_time"]
        case "turn_text_int":
            conversation["session_1"][0]["text"] = 5
        case "no_speaker_b":
            del conversation["speaker_b"]
        case "qa_not_list":
            sample["qa"] = {}
        case "answer_list":
            sample["qa"][0]["answer"] = ["Ann"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("no_sample_id", "sample[0] has no 'sample_id'"),
        ("no_question", "conv-1: qa[1] has no 'question'"),
        ("no_answer", "conv-1: qa[0] has no 'answer'"),
        ("category_str", "conv-1: qa[0]: 'category' must be int, got str"),
        ("category_9", "conv-1: qa[0]: unknown category 9 (expected 1-5)"),
        ("evidence_str", "conv-1: qa[0]: 'evidence' must be a list of str"),
        ("no_date", "conv-1: conversation has no 'session_2_date_time'"),
        ("turn_text_int", "conv-1: session_1[0]: 'text' must be str, got int"),
        ("no_speaker_b", "conv-1: conversation has no 'speaker_b'"),
        ("qa_not_list", "conv-1: 'qa' must be list, got dict"),
        ("answer_list", "conv-1: qa[0]: 'answer' must be str or a number, got list"),
    ],
)
def test_schema_errors_name_the_place(tmp_path: Path, edit: str, message: str) -> None:
    sample = minimal_sample()
    _break(sample, edit)
    with pytest.raises(DatasetError, match=re.escape(message)) as info:
        load_locomo(write_json(tmp_path, [sample]))
    assert "\n" not in str(info.value)


def test_duplicate_sample_ids_rejected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="sample_id 'conv-1' appears more than once"):
        load_locomo(write_json(tmp_path, [minimal_sample(), minimal_sample()]))


def test_dataset_error_is_a_value_error() -> None:
    assert issubclass(DatasetNotFoundError, DatasetError)
    assert issubclass(DatasetError, ValueError)


# ---------------------------------------------------------------- finding


@pytest.fixture
def isolated_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No env var, an empty user data dir, and cwd/repo root where no shared copy exists."""
    monkeypatch.delenv(LOCOMO_ENV_VAR, raising=False)
    user_file = tmp_path / "user-data" / "locomo" / "locomo10.json"
    monkeypatch.setattr(locomo_module, "default_locomo_path", lambda: user_file)
    monkeypatch.setattr(locomo_module, "_REPO_ROOT", tmp_path / "repo")
    work = tmp_path / "work" / "cwd"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    return user_file


def _make_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[]", encoding="utf-8")
    return path


def test_find_explicit_beats_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_search: Path
) -> None:
    explicit = _make_file(tmp_path / "a" / "locomo10.json")
    env = _make_file(tmp_path / "b" / "locomo10.json")
    monkeypatch.setenv(LOCOMO_ENV_VAR, str(env))
    assert find_locomo(explicit) == explicit
    assert find_locomo(str(explicit.parent)) == explicit  # a directory holding the file works too
    assert find_locomo() == env


def test_find_explicit_missing_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCOMO_ENV_VAR, str(LOCOMO_PATH))  # must not be used as a fallback
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(tmp_path / "x.json"))):
        find_locomo(tmp_path / "x.json")


def test_find_env_missing_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCOMO_ENV_VAR, str(tmp_path / "gone.json"))
    with pytest.raises(DatasetNotFoundError, match=f"{LOCOMO_ENV_VAR} points to .*gone.json"):
        find_locomo()


def test_find_order_of_implicit_places(tmp_path: Path, isolated_search: Path) -> None:
    (tmp_path / "repo").mkdir()
    repo_copy = _make_file(tmp_path / "shared/data/locomo/locomo10.json")
    assert find_locomo() == repo_copy.resolve()
    cwd_copy = _make_file(tmp_path / "work" / "shared/data/locomo/locomo10.json")
    assert find_locomo() == cwd_copy.resolve()
    _make_file(isolated_search)
    assert find_locomo() == isolated_search.resolve()


def test_find_not_found_lists_places_and_fixes(isolated_search: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        find_locomo()
    message = str(info.value)
    assert str(isolated_search) in message
    assert "shared/data/locomo/locomo10.json" in message
    assert "--data PATH" in message and LOCOMO_ENV_VAR in message
    assert "memory-r1 data download locomo" in message
    assert "\n" not in message


# ---------------------------------------------------------------- downloading


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A local HTTP server over a folder; yields (folder, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@needs_locomo
def test_download_from_local_server(tmp_path: Path, server_root: tuple[Path, str]) -> None:
    root, base = server_root
    (root / "locomo10.json").write_bytes(LOCOMO_PATH.read_bytes())
    dest = tmp_path / "out" / "locomo10.json"
    assert download_locomo(dest, url=f"{base}/locomo10.json") == dest
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == LOCOMO_SHA256
    assert len(load_locomo(dest)) == 10
    assert sorted(p.name for p in dest.parent.iterdir()) == ["locomo10.json"]  # no temp file left
    # already there with the right checksum: no network needed
    assert download_locomo(dest.parent, url=f"{base}/gone.json") == dest


@needs_locomo
def test_download_checksum_mismatch_leaves_nothing(tmp_path: Path, server_root: tuple[Path, str]) -> None:
    root, base = server_root
    (root / "locomo10.json").write_bytes(LOCOMO_PATH.read_bytes())
    dest = tmp_path / "out" / "locomo10.json"
    expected = f"checksum mismatch for .*: expected sha256 {'0' * 64}, got {LOCOMO_SHA256}"
    with pytest.raises(DatasetError, match=expected):
        download_locomo(dest, url=f"{base}/locomo10.json", sha256="0" * 64)
    assert list(dest.parent.iterdir()) == []


def test_download_rejects_non_locomo_content(tmp_path: Path, server_root: tuple[Path, str]) -> None:
    root, base = server_root
    (root / "page.html").write_text("<html>rate limited</html>", encoding="utf-8")
    dest = _make_file(tmp_path / "out" / "locomo10.json")  # an older copy must survive
    with pytest.raises(DatasetError, match=r"did not return a LoCoMo file: .* is not valid JSON"):
        download_locomo(dest, url=f"{base}/page.html", sha256=None)
    assert dest.read_text(encoding="utf-8") == "[]"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["locomo10.json"]


def test_download_http_error(tmp_path: Path, server_root: tuple[Path, str]) -> None:
    _, base = server_root
    with pytest.raises(DatasetError, match=r"could not download .*/missing\.json: HTTP 404"):
        download_locomo(tmp_path / "locomo10.json", url=f"{base}/missing.json")
    assert [p.name for p in tmp_path.iterdir()] == ["served"]


def test_download_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:  # find a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DatasetError, match=f"could not download http://127.0.0.1:{port}/x.json: "):
        download_locomo(tmp_path / "locomo10.json", url=f"http://127.0.0.1:{port}/x.json", timeout=5)
    assert not (tmp_path / "locomo10.json").exists()
