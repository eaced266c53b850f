"""The vod-receiver command line."""
import os
import socket
import subprocess
import sys

import pytest

from sqlalchemy import create_engine, inspect

from receiver import create_app
from receiver.config import ConfigError


def test_db_upgrade_creates_the_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    app = create_app({"RECEIVER_DATABASE_URL": url, "RECEIVER_SPOOL_DIR": str(tmp_path)})
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "database at head" in result.output
    engine = create_engine(url)
    assert {"events", "rejections", "alembic_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_console_script_lists_the_commands(tmp_path):
    env = {"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "PATH": ""}
    output = subprocess.run([sys.executable, "-m", "receiver.cli", "--help"], capture_output=True,
                            text=True, env=env, check=True).stdout
    for command in ("db", "serve", "spool"):
        assert f"  {command} " in output


def test_bad_environment_value_is_reported_clearly(monkeypatch):
    monkeypatch.setenv("RECEIVER_MAX_BODY_BYTES", "lots")
    with pytest.raises(ConfigError, match="RECEIVER_MAX_BODY_BYTES=lots: must be a whole number"):
        create_app()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vod_receiver(*args, env=None, tmp_path):
    """Run the installed command as a user would, with only `env` set; the finished process."""
    base = {"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'receiver.db'}",
            "RECEIVER_SPOOL_DIR": str(tmp_path / "spool"), "PATH": os.environ.get("PATH", "")}
    return subprocess.run([sys.executable, "-m", "receiver.cli", *args], capture_output=True,
                          text=True, env={**base, **(env or {})}, cwd=tmp_path, timeout=120)


def assert_one_error_line(result, *expected):
    """A non-zero exit with one line `Error: …` holding `expected`, and no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: ")
    for text in expected:
        assert text in line


@pytest.mark.parametrize("env, args, expected", [
    ({"RECEIVER_DB_TIMEOUT_MS": "-5"}, ["spool", "status"], "RECEIVER_DB_TIMEOUT_MS=-5: must be"),
    ({"RECEIVER_MAX_BODY_BYTES": "0"}, ["events", "list"], "RECEIVER_MAX_BODY_BYTES=0: must be"),
    ({"RECEIVER_WORKERS": "abc"}, ["serve"], "RECEIVER_WORKERS=abc: must be a whole number"),
    ({"RECEIVER_BIND": "localhost"}, ["serve"], "RECEIVER_BIND=localhost: must be HOST:PORT"),
    ({"RECEIVER_LOG_FORMAT": "yaml"}, ["db", "current"], "RECEIVER_LOG_FORMAT=yaml"),
    ({"RECEIVER_DATABASE_URL": "postgres://vod:hunter2@db/vod"}, ["db", "upgrade"],
     "write postgresql+psycopg://"),
    ({"RECEIVER_DATABASE_URL": "sqlite:////no/such/folder/r.db"}, ["db", "upgrade"],
     "/no/such/folder, does not exist"),
])
def test_a_bad_setting_stops_every_command_with_one_line(env, args, expected, tmp_path):
    result = vod_receiver(*args, env=env, tmp_path=tmp_path)

    assert_one_error_line(result, expected, "for example")
    assert "hunter2" not in result.stderr
    assert not (tmp_path / "receiver.db").exists()  # stopped before touching anything


def test_an_unknown_revision_is_one_line(database_url, tmp_path):
    result = vod_receiver("db", "upgrade", "nosuchrev", tmp_path=tmp_path,
                          env={"RECEIVER_DATABASE_URL": database_url})

    assert_one_error_line(result, "Can't locate revision identified by 'nosuchrev'")


def test_an_unreachable_database_is_one_line(tmp_path):
    url = f"postgresql+psycopg://vod:hunter2@127.0.0.1:{_free_port()}/vod"
    result = vod_receiver("db", "upgrade", tmp_path=tmp_path, env={"RECEIVER_DATABASE_URL": url})

    assert_one_error_line(result, "cannot use the database of RECEIVER_DATABASE_URL",
                          "Connection refused")
    assert "hunter2" not in result.stderr


def test_a_database_without_tables_is_one_line_saying_to_migrate(tmp_path):
    result = vod_receiver("events", "list", tmp_path=tmp_path)

    assert_one_error_line(result, "no receiver tables", "run vod-receiver db upgrade")


def test_a_misspelt_variable_is_named_with_the_nearest_setting(tmp_path):
    result = vod_receiver("spool", "status", tmp_path=tmp_path,
                          env={"RECIEVER_DATABASE_URL": "sqlite:///elsewhere.db"})

    assert result.returncode == 0, result.stderr
    assert result.stderr == ("Warning: RECIEVER_DATABASE_URL is not a vod-receiver setting and is "
                             "ignored; did you mean RECEIVER_DATABASE_URL?\n")


def test_the_command_alone_prints_its_help_without_flasks_development_tools(tmp_path):
    result = vod_receiver(tmp_path=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: ")
    offered = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")}
    assert {"db", "serve", "events"} <= offered  # the commands and options, each line's first word
    for flask_tool in ("run", "shell", "routes", "--app", "--env-file", "--debug"):
        assert flask_tool not in offered


@pytest.mark.parametrize("args", [["run"], ["shell"], ["routes"], ["--app", "x", "db", "current"],
                                  ["--env-file", ".env", "db", "current"], ["--debug", "db", "current"]])
def test_flasks_development_commands_and_options_are_not_offered(args, tmp_path):
    result = vod_receiver(*args, tmp_path=tmp_path)

    assert result.returncode == 2
    assert f"Error: No such {'option' if args[0].startswith('-') else 'command'} '{args[0]}'" in result.stderr


@pytest.mark.parametrize("option, value", [("--workers", "0"), ("--workers", "many"),
                                           ("--bind", "localhost"), ("--bind", "127.0.0.1:70000")])
def test_serves_options_get_the_checks_of_their_variables(option, value, tmp_path):
    result = vod_receiver("serve", option, value, tmp_path=tmp_path)

    assert result.returncode == 2
    assert f"Error: Invalid value for {option}: must be" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "receiver.db").exists()  # refused before migrating
