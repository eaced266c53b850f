"""`vod-receiver event-config show|set|state` against the emulator: one command switches modes."""
import json

import pytest
from click.testing import CliRunner

from receiver.cli import main
from receiver.emulator import Emulator
from vod_upload_fixtures import SECRET_ID, SECRET_KEY


@pytest.fixture
def emu(tmp_path):
    with Emulator(secret_id=SECRET_ID, secret_key=SECRET_KEY, storage_dir=tmp_path / "vod",
                  long_poll_seconds=0.1) as emulator:
        yield emulator


def _run(emu, *args, **env):
    environment = {"TENCENTCLOUD_SECRET_ID": SECRET_ID, "TENCENTCLOUD_SECRET_KEY": SECRET_KEY,
                   "VOD_API_ENDPOINT": emu.api_endpoint, "VOD_SUB_APP_ID": "", **env}
    return CliRunner().invoke(main, ["event-config", *args], env=environment)


def test_show_prints_the_config(emu):
    result = _run(emu, "show", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "Mode": "PUSH", "NotificationUrl": "", "UploadMediaCompleteEventSwitch": "ON",
        "DeleteMediaCompleteEventSwitch": "OFF", "PersistenceCompleteEventSwitch": "OFF"}


def test_set_mode_pull_is_one_command_and_prints_before_and_after(emu):
    result = _run(emu, "set", "--mode", "PULL", "--delete-switch", "ON")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()[1:]}
    assert lines["Mode"] == ["PUSH", "PULL", "changed"]
    assert lines["DeleteMediaCompleteEventSwitch"] == ["OFF", "ON", "changed"]
    assert lines["UploadMediaCompleteEventSwitch"] == ["ON", "ON"]
    assert emu.event_config.mode == "PULL" and emu.event_config.switches["DeleteMediaCompleteEventSwitch"] == "ON"


def test_set_sends_the_whole_config_so_unnamed_switches_keep_their_values(emu):
    emu.event_config.switches["PersistenceCompleteEventSwitch"] = "ON"
    assert _run(emu, "set", "--mode", "PULL").exit_code == 0
    assert emu.event_config.switches == {"UploadMediaCompleteEventSwitch": "ON",
                                         "DeleteMediaCompleteEventSwitch": "OFF",
                                         "PersistenceCompleteEventSwitch": "ON"}


def test_set_refuses_a_push_url_that_is_not_https_unless_allowed(emu):
    refused = _run(emu, "set", "--mode", "PUSH", "--url", "http://receiver.example/callbacks/vod")
    assert refused.exit_code == 2 and "not https" in refused.output and emu.callback_url is None
    allowed = _run(emu, "set", "--mode", "PUSH", "--url", "http://127.0.0.1:8000/callbacks/vod", "--allow-http")
    assert allowed.exit_code == 0 and emu.callback_url == "http://127.0.0.1:8000/callbacks/vod"
    https = _run(emu, "set", "--url", "https://receiver.example/callbacks/vod", "--sign-key", "Key2026", "--json")
    assert json.loads(https.output)["after"]["NotificationUrl"] == "https://receiver.example/callbacks/vod"
    assert emu.sign_key == "Key2026"


def test_set_without_a_change_or_with_a_bad_sign_key_is_a_usage_error(emu):
    assert _run(emu, "set").exit_code == 2
    bad = _run(emu, "set", "--sign-key", "not alnum!")
    assert bad.exit_code == 2 and "letters and digits" in bad.output


def test_state_counts_the_events_waiting(emu):
    emu.enqueue({"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": ["1"]}})
    result = _run(emu, "state")
    assert (result.exit_code, result.output) == (0, "1 events to pull\n")


def test_errors_are_one_line(emu):
    missing = CliRunner().invoke(main, ["event-config", "show"], env={
        "TENCENTCLOUD_SECRET_ID": "", "TENCENTCLOUD_SECRET_KEY": "", "VOD_API_ENDPOINT": emu.api_endpoint})
    assert missing.exit_code == 1 and len(missing.output.strip().splitlines()) == 1
    assert "TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY not set" in missing.output
    wrong = _run(emu, "show", TENCENTCLOUD_SECRET_KEY="wrong")
    assert wrong.exit_code == 1 and wrong.output.startswith("Error: AuthFailure.SignatureFailure")
    assert len(wrong.output.strip().splitlines()) == 1
