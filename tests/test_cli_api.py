"""`memory-r1 add/search/answer --user` and `serve --no-auth` guards, through the real CLI."""

import pytest
from typer.testing import CliRunner

from memory_r1.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_add_then_search_by_user_on_a_store_file(tmp_path):
    store = tmp_path / "bank.db"
    common = ("--store", store, "--model", "tiny-random")
    for text, user in (("I love green tea", "alice"), ("I love hiking", "bob")):
        result = run("add", text, "--user", user, "--no-infer", *common)
        assert result.exit_code == 0, result.output
        assert "ADD" in result.output
    found = run("search", "green tea", "--user", "alice", *common)
    assert found.exit_code == 0 and "green tea" in found.output and "hiking" not in found.output
    answered = run("answer", "What do I love?", "--user", "alice", *common)
    assert answered.exit_code == 0 and "Answer:" in answered.output


def test_bad_scope_and_remote_no_auth_are_one_line_errors(tmp_path):
    result = run("add", "x", "--no-infer", "--store", tmp_path / "b.db", "--model", "tiny-random")
    assert result.exit_code == 1 and "scope needs at least one" in result.output
    result = run("serve", "--host", "0.0.0.0", "--no-auth", "--store", tmp_path / "b.db")
    assert result.exit_code == 1 and "only allowed on a loopback host" in result.output


@pytest.fixture(params=["sqlite", "postgres"])
def store_location(request, tmp_path) -> str:
    """A SQLite file path or a fresh PostgreSQL database's DSN: --store takes either."""
    return request.getfixturevalue("pg_dsn") if request.param == "postgres" else str(tmp_path / "bank.db")


def test_memories_list_history_undo_on_scopes(store_location):
    common = ("--store", store_location, "--model", "tiny-random", "--embedding-model", "hashing")
    for text, scope in (
        ("alice likes tea", ("--user", "alice")),
        ("helper note", ("--user", "alice", "--agent", "helper")),
        ("alice moved to Porto", ("--user", "alice")),
        ("bob likes chess", ("--user", "bob")),
    ):
        assert run("add", text, *scope, "--no-infer", *common).exit_code == 0
    where = ("--store", store_location)
    listed = run("memories", "list", "--user", "alice", *where)
    assert listed.exit_code == 0, listed.output
    assert "alice likes tea" in listed.output and "Porto" in listed.output
    assert "helper note" not in listed.output and "chess" not in listed.output
    helper = run("memories", "list", "--user", "alice", "--agent", "helper", *where).output
    assert "helper note" in helper and "agent_id=helper" in helper and "tea" not in helper
    history = run("memories", "history", "--user", "bob", *where).output
    assert "bob likes chess" in history and "alice" not in history
    undone = run("memories", "undo", "--user", "alice", *where)  # alice's latest, though bob's came later
    assert undone.exit_code == 0 and "of memory 3 " in undone.output  # ids: tea 1, helper 2, Porto 3, chess 4
    after = run("memories", "list", "--all", *where).output
    assert "Porto" in after and "chess" in after  # --all lists the undone add as deleted
    alive = run("memories", "list", "--user", "alice", *where).output
    assert "Porto" not in alive and "alice likes tea" in alive
    assert "chess" in run("memories", "list", "--user", "bob", *where).output
    bob_history = run("memories", "history", "--user", "bob", *where).output
    foreign = run("memories", "undo", "1", "--user", "bob", *where)  # #1 is alice's first add
    assert (
        foreign.exit_code == 1
        and "not a change of bob" in foreign.output
        and "Traceback" not in foreign.output
    )
    assert "chess" in bob_history
    both = run("memories", "list", "--owner", "alice", "--user", "alice", *where)
    assert both.exit_code == 1 and "not both" in both.output
