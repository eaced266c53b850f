"""The vod-receiver command line."""
import subprocess
import sys

import pytest

from sqlalchemy import create_engine, inspect

from receiver import create_app


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
    with pytest.raises(RuntimeError, match="RECEIVER_MAX_BODY_BYTES must be a whole number"):
        create_app()
