"""LongMemEval and MSC loaders on fixture files written in the published schemas (our own text), and their
checksum-verified downloads against a local HTTP server (this machine has no network)."""

from __future__ import annotations

import copy
import functools
import json
import socket
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memory_r1.cli import app
from memory_r1.data import DatasetError, load_benchmark, load_longmemeval, load_msc, sha256_file
from memory_r1.data import longmemeval as lme
from memory_r1.data import msc as msc_module
from memory_r1.data.download import RemoteFile
from memory_r1.data.longmemeval import download_longmemeval, parse_longmemeval, parse_longmemeval_date
from memory_r1.data.msc import download_msc, parse_msc_row

FIXTURES = Path(__file__).parent / "fixtures"
LME = FIXTURES / "longmemeval_fixture.json"
MSC = FIXTURES / "msc_fixture.jsonl"


def test_longmemeval_fixture_becomes_one_conversation_per_question() -> None:
    convs = {c.sample_id: c for c in load_longmemeval(LME)}
    assert list(convs) == ["fx0001", "fx0002", "fx0003_abs", "fx0004"]
    bike = convs["fx0001"]
    assert bike.speakers == ("User", "Assistant") and len(bike.sessions) == 2
    assert [t.dia_id for t in bike.turns] == ["D1:1", "D1:2", "D2:1", "D2:2"]
    assert [t.speaker for t in bike.turns] == ["User", "Assistant", "User", "Assistant"]
    assert bike.sessions[1].timestamp == "2023/05/20 (Sat) 10:05"
    assert bike.sessions[1].occurred_at == datetime(2023, 5, 20, 10, 5) == bike.turns[2].occurred_at
    (q,) = bike.qa
    assert (q.question, q.answer, q.category, q.dataset) == (
        "What colour is my new bicycle?",
        "Teal",
        None,
        "longmemeval",
    )
    assert (q.question_type, q.abstention, q.question_date) == ("single-session-user", False,
                                                                "2023/06/12 (Mon) 09:15")
    assert q.evidence == ("D2:1",)  # the turn flagged has_answer, not its whole session
    assert q.asked == "(Asked on 2023/06/12 (Mon) 09:15) What colour is my new bicycle?"
    assert convs["fx0002"].qa[0].answer == "9"  # a numeric answer, cast
    assert convs["fx0002"].qa[0].evidence == ("D1:1", "D2:1")
    abstain = convs["fx0003_abs"].qa[0]
    assert abstain.abstention and abstain.question_type == "single-session-user"
    assert abstain.evidence == ("D1:1", "D1:2")  # an answer session that flags no turn: all its turns


def test_longmemeval_dates() -> None:
    assert parse_longmemeval_date("2023/05/30 (Tue) 23:40") == datetime(2023, 5, 30, 23, 40)
    assert parse_longmemeval_date("2023/5/3 (Wed) 08:05") == datetime(2023, 5, 3, 8, 5)
    assert parse_longmemeval_date("2023/02/30 (Thu) 10:00") is None  # no such day
    assert parse_longmemeval_date("yesterday") is None


def _mutated(change) -> list[dict[str, Any]]:
    data = json.loads(LME.read_text())
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d[0].pop("question_date"), "has no 'question_date'"),
        (lambda d: d[0].__setitem__("question_type", "trivia"), "unknown question_type 'trivia'"),
        (lambda d: d[0]["haystack_dates"].pop(), "differ in length"),
        (lambda d: d[0]["haystack_sessions"][0][0].__setitem__("role", "system"), "role must be"),
        (
            lambda d: d[0]["haystack_sessions"][1].__setitem__(0, "hello"),
            r"haystack_sessions\[1\]\[0\] must be an object",
        ),
        (lambda d: d[1].__setitem__("question_id", "fx0001"), "appears more than once"),
        (lambda d: d[0].__setitem__("answer", ["Teal"]), "'answer' must be str or int or float"),
    ],
)
def test_longmemeval_schema_errors_name_the_place(change, message) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_longmemeval(_mutated(change), source="f.json")


def test_longmemeval_top_level_and_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="top level must be a list"):
        parse_longmemeval({"question_id": "x"})
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(DatasetError, match="is not valid JSON"):
        load_longmemeval(bad)
    with pytest.raises(DatasetError, match="does not exist"):
        load_longmemeval(tmp_path / "missing.json")


def test_msc_fixture_previous_sessions_then_the_current_one() -> None:
    first, second = load_msc(MSC)
    assert first.sample_id == "msc-0" and second.sample_id == "msc-1"
    assert first.speakers == ("Speaker 1", "Speaker 2") and len(first.sessions) == 3
    assert [t.speaker for t in first.sessions[0].turns] == ["Speaker 1", "Speaker 2"]  # no ids: alternate
    assert first.sessions[0].turns[0].text == "I walked the ridge trail near Lake Orta on Sunday."
    assert first.sessions[0].timestamp == "session 1 (14 days before the current session)"
    assert first.sessions[2].timestamp == "session 3 (the current session)"
    assert [t.dia_id for t in first.sessions[2].turns] == ["D3:1", "D3:2"]
    (q,) = first.qa
    assert (q.question, q.answer, q.dataset, q.category) == (
        "What is the name of the dog you took hiking?",
        "Pico",
        "msc",
        None,
    )
    assert len(second.sessions) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("self_instruct"), "self_instruct must be an object"),
        (lambda r: r["self_instruct"].pop("A"), "has no 'A'"),
        (lambda r: r["dialog"][0].__setitem__("id", "Speaker 3"), "'id' must be 'Speaker 1' or 'Speaker 2'"),
        (
            lambda r: r["previous_dialogs"][0]["dialog"][1].pop("text"),
            r"previous_dialogs\[0\]\[1\] has no 'text'",
        ),
        (lambda r: r.__setitem__("previous_dialogs", {}), "'previous_dialogs' must be list"),
    ],
)
def test_msc_schema_errors_name_the_place(change, message) -> None:
    row = json.loads(MSC.read_text().splitlines()[0])
    change(row)
    with pytest.raises(DatasetError, match=message):
        parse_msc_row(copy.deepcopy(row), 0, "f.jsonl: line 1")


def test_msc_bad_lines(tmp_path: Path) -> None:
    bad = tmp_path / "m.jsonl"
    bad.write_text(MSC.read_text().splitlines()[0] + "\n{not json\n")
    with pytest.raises(DatasetError, match="line 2 is not valid JSON"):
        load_msc(bad)
    bad.write_text("\n\n")
    with pytest.raises(DatasetError, match="holds no MSC rows"):
        load_msc(bad)


def test_load_benchmark_dispatch(tmp_path: Path) -> None:
    assert len(load_benchmark("longmemeval", LME)) == 4 and len(load_benchmark("msc", MSC)) == 2
    with pytest.raises(DatasetError, match="unknown dataset 'squad'"):
        load_benchmark("squad", LME)
    with pytest.raises(DatasetError, match="--variant is for longmemeval"):
        load_benchmark("msc", MSC, variant="s")
    with pytest.raises(DatasetError, match="unknown LongMemEval variant 'xl'"):
        load_benchmark("longmemeval", None, variant="xl")


# ---------------------------------------------------------------- downloading


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server over a folder holding both fixtures and a non-dataset page; yields its base URL."""
    root = tmp_path / "served"
    root.mkdir()
    for f in (LME, MSC):
        (root / f.name).write_bytes(f.read_bytes())
    (root / "page.html").write_text("<html>not a dataset</html>")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_checks_the_checksum_then_the_schema(tmp_path: Path, served: str) -> None:
    good = sha256_file(LME)
    dest = tmp_path / "out" / "lme.json"
    assert download_longmemeval("oracle", dest, url=f"{served}/{LME.name}", sha256=good) == dest
    assert sha256_file(dest) == good and len(load_longmemeval(dest)) == 4
    with pytest.raises(DatasetError, match="checksum mismatch"):
        download_longmemeval("oracle", tmp_path / "x.json", url=f"{served}/{LME.name}", sha256="0" * 64)
    html = sha256_file(tmp_path / "served" / "page.html")  # right checksum, wrong content
    with pytest.raises(DatasetError, match="did not return a MSC file"):
        download_msc(tmp_path / "m.jsonl", url=f"{served}/page.html", sha256=html)
    assert not list(tmp_path.glob("x.json*")) and not list(
        tmp_path.glob("*.part")
    )  # nothing half-written left
    (tmp_path / "msc").mkdir()  # a folder: the file keeps its published name inside it
    msc_dest = download_msc(tmp_path / "msc", url=f"{served}/{MSC.name}", sha256=sha256_file(MSC))
    assert msc_dest == tmp_path / "msc" / "msc_self_instruct.jsonl" and len(load_msc(msc_dest)) == 2


def test_pinned_files_are_https_with_full_sha256() -> None:
    for remote in [*lme.LONGMEMEVAL_FILES.values(), msc_module.MSC_FILE]:
        assert remote.url.startswith("https://huggingface.co/datasets/") and remote.url.endswith(remote.name)
        assert len(remote.sha256) == 64 and int(remote.sha256, 16) >= 0


def _refused_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.json"


@pytest.mark.parametrize("name", ["longmemeval", "msc"])
def test_cli_download_without_network_is_one_line(name: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    url = _refused_url()
    monkeypatch.setitem(lme.LONGMEMEVAL_FILES, "s", RemoteFile("f.json", url, "0" * 64))
    monkeypatch.setattr(msc_module, "MSC_FILE", RemoteFile("f.jsonl", url, "0" * 64))
    result = CliRunner().invoke(app, ["data", "download", name, "--dest", str(tmp_path / "d")])
    assert (
        result.exit_code == 1 and "could not download" in result.output and "Traceback" not in result.output
    )
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_longmemeval_top_level_must_be_a_list_of_questions():
    with pytest.raises(DatasetError, match="top level must be a list of questions, got dict"):
        parse_longmemeval({"question_id": "q1"})
