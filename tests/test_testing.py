"""The pytest plugin (receiver/testing.py), used as a user would: pytester writes a small project
with handlers and tests that replay saved callbacks, and runs pytest in it."""
import json
import re
from pathlib import Path

from factories import new_file_upload

from receiver import samples

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_example():
    """The files of the README's "Testing your handlers" example: {name: text}."""
    section = README.read_text(encoding="utf-8").split("\n## Testing your handlers\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    files = {}
    for block in blocks:
        name = re.match(r"# (\S+\.py)", block).group(1)
        files[name] = block
    return files


def _run(pytester, *args):
    # In a subprocess: the plugin is found through the installed entry point, as in a user's
    # project, and the user's handlers register in that process, not in this one.
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", *args)


def test_the_readme_example_passes_in_a_fresh_project(pytester):
    files = _readme_example()
    assert sorted(files) == ["test_uploads.py", "uploads.py"]
    for name, text in files.items():
        (pytester.path / name).write_text(text, encoding="utf-8")
    (pytester.path / "callbacks").mkdir()
    # As saved by `vod-receiver events show ID --raw > callbacks/upload.json`.
    (pytester.path / "callbacks" / "upload.json").write_bytes(samples.read("v3-push-newfileupload.json"))
    result = _run(pytester)
    result.assert_outcomes(passed=2)


def test_handler_failures_refusals_and_sources_as_a_user_sees_them(pytester):
    pytester.makepyfile(hooks="""
        from receiver import handlers

        @handlers.on("NewFileUpload")
        def explode(event):
            raise ValueError(f"no room for {event.file_id}")
    """, test_hooks="""
        import pytest
        import hooks
        from receiver.testing import CallbackRefused, HandlerFailed

        def test_a_failing_handler_raises_with_its_traceback(vod_replay, vod_sample):
            with pytest.raises(HandlerFailed) as failure:
                vod_replay(vod_sample("v3-push-newfileupload.json"), run_handlers=True)
            assert "ValueError: no room for 5285890784273533167" in str(failure.value)
            assert 'raise ValueError(f"no room for' in str(failure.value)  # the traceback

        def test_or_is_only_recorded(vod_replay, vod_sample):
            [event] = vod_replay(vod_sample("v3-push-newfileupload.json"), run_handlers=True,
                                 raise_errors=False)
            assert event.file_id == "5285890784273533167"

        def test_a_refused_callback_says_why(vod_replay):
            with pytest.raises(CallbackRefused, match="bytes: the receiver answered 400 invalid_json"):
                vod_replay(b"not json")

        def test_bytes_a_file_and_a_list(vod_replay, vod_sample, vod_sample_names, tmp_path):
            assert "v2-newfileupload.json" in vod_sample_names
            saved = tmp_path / "saved.json"
            saved.write_bytes(vod_sample("v3-push-filedeleted.json"))
            [a, b] = vod_replay([vod_sample("v2-newfileupload.json"), saved])
            assert (a.format, b.event_type) == ("v2", "FileDeleted")
    """)
    _run(pytester).assert_outcomes(passed=4)


def test_an_export_folder_is_replayed_in_order_with_its_content_types(
        app, client, runner, tmp_path, vod_replay):
    for n, ctype in ((1, "text/plain; charset=utf-8"), (2, None), (3, "application/json")):
        body = new_file_upload(f"f{n}", source_context=f"order-{n}")
        assert client.post("/callbacks/vod", data=body, content_type=ctype).status_code == 200
    folder = tmp_path / "callbacks"
    assert runner.invoke(args=["events", "export", str(folder)]).exit_code == 0
    manifest = json.loads((folder / "manifest.json").read_text())["files"]

    events = vod_replay(folder)  # into the plugin's own throwaway receiver

    assert [e.file_id for e in events] == ["f1", "f2", "f3"]
    assert [e.content_type for e in events] == ["text/plain; charset=utf-8", None, "application/json"]
    assert [e.body_sha256 for e in events] == [entry["sha256"] for entry in manifest]
    # Replayed again: the same events, counted as duplicates.
    again = vod_replay(folder)
    assert [e.id for e in again] == [e.id for e in events]
    assert [e.delivery_count for e in again] == [2, 2, 2]


def test_every_fixture_of_the_plugin_is_named_vod_(pytester):
    # So it cannot shadow a project's own `app`, `client` or `runner` (this project's included).
    output = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--fixtures").stdout.str()
    section = output.split("fixtures defined from receiver.testing", 1)[1].split("\n---", 1)[0]
    names = re.findall(r"^(\w+)", section, re.M)
    assert "vod_replay" in names and all(name.startswith("vod_") for name in names), names
