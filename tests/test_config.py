"""The settings table: every variable checked at start, one line per bad value, typos named."""
import re
from pathlib import Path

import pytest

from receiver import config, create_app
from receiver.config import SETTINGS, ConfigError

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "A" * 24


@pytest.mark.parametrize("name, value, problem", [
    ("RECEIVER_DB_TIMEOUT_MS", "-5", "must be a whole number from 1 to 60000"),
    ("RECEIVER_DB_TIMEOUT_MS", "0", "must be a whole number from 1 to 60000"),
    ("RECEIVER_MAX_BODY_BYTES", "0", "must be a whole number from 1024"),
    ("RECEIVER_MAX_BODY_BYTES", "1MB", "must be a whole number"),
    ("RECEIVER_WORKERS", "abc", "must be a whole number from 1 to 64"),
    ("RECEIVER_WORKERS", "0", "must be a whole number from 1 to 64"),
    ("RECEIVER_BIND", "8000", "must be HOST:PORT"),
    ("RECEIVER_BIND", "127.0.0.1:99999", "must be HOST:PORT"),
    ("RECEIVER_TRUSTED_PROXIES", "-1", "must be a whole number from 0 to 10"),
    ("RECEIVER_SIGN_CLOCK_SKEW", "5m", "must be a whole number from 0"),
    ("RECEIVER_SPOOL_DRAIN_INTERVAL", "-1", "must be a whole number from 0"),
    ("RECEIVER_BODY_TIMEOUT", "0", "must be a number of seconds above 0"),
    ("RECEIVER_BODY_TIMEOUT", "2000", "at most 30"),  # milliseconds where seconds are meant
    ("RECEIVER_BODY_TIMEOUT", "nan", "must be a number of seconds"),
    ("RECEIVER_LOG_FORMAT", "xml", "must be auto, json or text"),
    ("RECEIVER_ALLOWED_CIDRS", "10.0.0.1/8", "'10.0.0.1/8' is not an IP address or CIDR network"),
    ("RECEIVER_DATABASE_URL", "mysql://db/vod", "is neither SQLite nor PostgreSQL"),
    ("RECEIVER_DATABASE_URL", "not a url", "is not a database URL"),
    ("RECEIVER_DATABASE_URL", "sqlite:////no/such/folder/receiver.db",
     "the folder of the SQLite file, /no/such/folder, does not exist"),
])
def test_a_bad_value_stops_with_one_line_naming_the_variable_and_an_example(name, value, problem):
    with pytest.raises(ConfigError) as failure:
        config.check_environment({name: value})

    message = str(failure.value)
    assert message.startswith(f"{name}")
    assert problem in message
    assert re.search(rf"; for example {name}=\S", message)
    assert "\n" not in message


@pytest.mark.parametrize("url", ["postgres://vod:hunter2@db/vod", "postgresql://vod:hunter2@db/vod",
                                 "postgresql+psycopg2://vod:hunter2@db/vod"])
def test_a_postgres_url_without_psycopg_gets_a_hint_and_keeps_its_password(url):
    with pytest.raises(ConfigError) as failure:
        config.check_environment({"RECEIVER_DATABASE_URL": url})

    assert "write postgresql+psycopg://" in str(failure.value)
    assert "hunter2" not in str(failure.value)


@pytest.mark.parametrize("name, value", [("RECEIVER_CALLBACK_TOKENS", "short-secret"),
                                         ("RECEIVER_CALLBACK_TOKENS", f"{TOKEN},has/a/slash/0123456789")])
def test_errors_never_repeat_a_secret(name, value):
    with pytest.raises(ConfigError) as failure:
        config.check_environment({name: value})

    assert "short-secret" not in str(failure.value) and "has/a/slash" not in str(failure.value)


def test_a_spool_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="RECEIVER_SPOOL_DIR=.*: is a file, not a folder"):
        config.check_environment({"RECEIVER_SPOOL_DIR": str(tmp_path / "file")})


def test_values_are_parsed_into_their_types_and_blanks_mean_the_default():
    settings = config.from_env({"RECEIVER_BODY_TIMEOUT": "0.5", "RECEIVER_DB_TIMEOUT_MS": " 150 ",
                                "RECEIVER_MAX_BODY_BYTES": "", "VOD_SIGN_KEYS": "a, b"})
    config.check(settings)

    assert settings["RECEIVER_BODY_TIMEOUT"] == 0.5
    assert settings["RECEIVER_DB_TIMEOUT_MS"] == 150
    assert settings["RECEIVER_MAX_BODY_BYTES"] == 1024 * 1024
    assert settings["VOD_SIGN_KEYS"] == ("a", "b")
    assert settings["RECEIVER_LOG_FORMAT"] == "auto"
    assert config.value("RECEIVER_WORKERS", {}) >= 1
    assert config.value("RECEIVER_BIND", {}) == "127.0.0.1:8000"


def test_the_app_gets_every_app_setting_including_the_body_timeout(tmp_path):
    app = create_app({"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})

    assert app.config["RECEIVER_BODY_TIMEOUT"] == 2.0
    for setting in SETTINGS:
        assert (setting.name in app.config) == (setting.scope == "app"), setting.name


def test_create_app_checks_its_overrides_too(tmp_path):
    with pytest.raises(ConfigError, match="RECEIVER_DB_TIMEOUT_MS=-5"):
        create_app({"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
                    "RECEIVER_DB_TIMEOUT_MS": -5})


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_each_example_is_a_valid_value(setting):
    if setting.example.startswith("$("):  # a command that generates the value
        pytest.skip("generated")
    setting.parse(setting.example)


@pytest.mark.parametrize("variable, nearest", [
    ("RECIEVER_DATABASE_URL", "RECEIVER_DATABASE_URL"),  # the prefix misspelt
    ("RECEIVER_WORKER", "RECEIVER_WORKERS"),
    ("VOD_SIGN_KEY", "VOD_SIGN_KEYS"),
    ("RECEIVER_ADMIN_TOKEN", "RECEIVER_ADMIN_TOKENS"),
])
def test_an_unknown_variable_gets_a_warning_with_the_nearest_name(variable, nearest):
    [warning] = config.unknown({variable: "x", "PATH": "/bin", "HOME": "/root",
                                "RECEIVER_DATABASE_URL": "sqlite://"})

    assert warning.startswith(f"{variable} is not a vod-receiver setting")
    assert warning.endswith(f"did you mean {nearest}?")


def test_other_programs_variables_get_no_warning():
    environ = {"PATH": "/bin", "HOME": "/root", "PYTHONPATH": "x", "GUNICORN_CMD_ARGS": "",
               "PROMETHEUS_MULTIPROC_DIR": "/tmp/m", "DATABASE_URL": "x", "PGPASSWORD": "x"}
    assert config.unknown(environ) == []


def test_the_readme_table_lists_exactly_the_settings():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([A-Z_]+)` \|", section, re.M)

    assert sorted(documented) == sorted(s.name for s in SETTINGS)
