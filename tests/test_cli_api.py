"""`memory-r1 add/search/answer --user` and `serve --no-auth` guards, through the real CLI."""

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
