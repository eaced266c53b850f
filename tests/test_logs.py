import io
import json
import logging
import sys

import pytest

from receiver import logs

from conftest import SAMPLES


class Terminal(io.StringIO):
    def isatty(self):
        return True


def callback_lines(caplog):
    """The callback records of the request, as the JSON lines the receiver writes."""
    formatter = logs.JSONFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "receiver.callbacks"]


def test_each_callback_logs_one_json_line_with_its_identity(client, caplog):
    document = json.loads((SAMPLES / "v3-push-newfileupload.json").read_bytes())
    document["FileUploadEvent"]["MediaBasicInfo"]["SourceInfo"]["SourceContext"] = "order-42"
    document["Sign"], document["T"] = "0123456789abcdef0123456789abcdef", 4102444800

    with caplog.at_level(logging.INFO):
        response = client.post("/callbacks/vod", data=json.dumps(document),
                               headers={"X-Request-Id": "req-7", "Authorization": "Bearer hunter2"})

    [line] = callback_lines(caplog)
    assert response.headers["X-Request-Id"] == "req-7"
    assert line["request_id"] == "req-7"
    assert line["message"] == "callback stored"
    assert line["outcome"] == "stored"
    assert line["event_type"] == "NewFileUpload"
    assert line["format"] == "v3"
    assert line["file_id"] == "5285890784273533167"
    assert line["source_context"] == "order-42"
    assert line["latency_ms"] >= 0
    text = json.dumps(line)
    for secret_or_body in ("hunter2", "0123456789abcdef", "Animal World", "MediaUrl", "myqcloud"):
        assert secret_or_body not in text


def test_a_refused_callback_logs_its_reason(client, caplog):
    with caplog.at_level(logging.INFO):
        client.post("/callbacks/vod", data=b'{"password": "hunter2"')

    [line] = callback_lines(caplog)
    assert line["outcome"] == "rejected"
    assert line["reason"] == "invalid_json"
    assert line["status"] == 400
    assert "hunter2" not in json.dumps(line)


@pytest.mark.parametrize("supplied", [None, "", "has space", "x" * 129, "quote\"s", "tab\there"])
def test_a_request_id_is_generated_when_none_usable_is_supplied(client, caplog, supplied):
    headers = {"X-Request-Id": supplied} if supplied is not None else {}
    with caplog.at_level(logging.INFO):
        response = client.post("/callbacks/vod", data=b"{}", headers=headers)

    [line] = callback_lines(caplog)
    generated = response.headers["X-Request-Id"]
    assert generated != supplied and len(generated) == 32
    assert line["request_id"] == generated


def test_other_endpoints_log_nothing_but_echo_a_request_id(client, caplog):
    with caplog.at_level(logging.INFO):
        response = client.get("/livez")

    assert callback_lines(caplog) == []
    assert len(response.headers["X-Request-Id"]) == 32


def test_terminals_get_text_and_everything_else_json_lines():
    assert isinstance(logs.formatter("auto", Terminal()), logs.TextFormatter)
    assert isinstance(logs.formatter("auto", io.StringIO()), logs.JSONFormatter)
    assert isinstance(logs.formatter("json", Terminal()), logs.JSONFormatter)
    with pytest.raises(RuntimeError, match="RECEIVER_LOG_FORMAT"):
        logs.formatter("xml", io.StringIO())


def test_text_lines_show_the_fields_as_key_value():
    record = logging.LogRecord("receiver.callbacks", logging.INFO, __file__, 1, "callback %s",
                               ("stored",), None)
    record.request_id, record.fields = "req-1", {"file_id": "42", "task_id": None}

    line = logs.TextFormatter().format(record)

    assert line.endswith("INFO    receiver.callbacks: callback stored file_id='42' request_id='req-1'")


def test_json_lines_carry_exceptions():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("receiver", logging.ERROR, __file__, 1, "failed", (),
                                   sys.exc_info())

    line = json.loads(logs.JSONFormatter().format(record))

    assert line["level"] == "ERROR" and "ValueError: boom" in line["exception"]
