"""The CLI contract basics: init, lists, config, one-line errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

from patron.cli.app import hoist_global_options


def test_lists_create_and_ls(cli):
    r = cli("lists", "create", "newsletter")
    assert r.code == 0, r.err
    assert cli("lists", "create", "vip", "--single-opt-in").code == 0
    r = cli("lists", "ls", "--json")
    assert r.code == 0
    docs = json.loads(r.out)
    assert [(d["name"], d["double_opt_in"]) for d in docs] == [("newsletter", True), ("vip", False)]


def test_duplicate_list_is_one_line_error(cli):
    assert cli("lists", "create", "news").code == 0
    r = cli("lists", "create", "news")
    assert r.code == 1
    assert r.err == "patron: error: list 'news' already exists\n"
    assert r.out == ""


def test_usage_error_is_one_line_exit_2(cli):
    r = cli("lists", "ls", "--bogus")
    assert r.code == 2
    assert len(r.err.strip().splitlines()) == 1
    assert "--bogus" in r.err


def test_uninitialized_database_says_run_init(tmp_path, capsys):
    from patron.cli.app import main

    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    assert main(["lists", "ls", "--db", url]) == 1
    err = capsys.readouterr().err
    assert err == "patron: error: the database is not initialized: run `patron init`\n"
    assert main(["init", "--db", url]) == 0
    capsys.readouterr()
    assert main(["--db", url, "lists", "ls", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_init_is_idempotent(cli, db_url):
    first = cli("init", "--json")
    second = cli("init", "--json")
    assert first.code == second.code == 0
    assert json.loads(first.out)["revision"] == json.loads(second.out)["revision"]


def test_unreachable_database_is_one_line(capsys):
    from patron.cli.app import main

    code = main(["lists", "ls", "--db", "postgresql://postgres@127.0.0.1:9/none"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("patron: error: cannot reach the database:")
    assert len(err.splitlines()) == 1


def test_hoist_db_option():
    assert hoist_global_options(["lists", "ls", "--db", "x", "--json"]) == [
        "--db", "x", "lists", "ls", "--json"]
    assert hoist_global_options(["lists", "ls", "--db=x"]) == ["--db=x", "lists", "ls"]


def test_console_script_runs(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.sqlite3'}"
    done = subprocess.run(
        [sys.executable, "-m", "patron", "init", "--db", url, "--json"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["revision"]
