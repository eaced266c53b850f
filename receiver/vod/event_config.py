"""VOD's event configuration: DescribeEventConfig, ModifyEventConfig and DescribeEventsState.

`change` always sends the whole configuration (what DescribeEventConfig answered, with the
changes on top): VOD documents the switches of ModifyEventConfig as "default OFF", so a call
that left one out might turn it off; sending every value says exactly what is meant.
"""
import json
from urllib.parse import urlsplit

from .client import Client, vod_retryable

MODES = ("PUSH", "PULL")
SWITCHES = {"upload": "UploadMediaCompleteEventSwitch", "delete": "DeleteMediaCompleteEventSwitch",
            "persistence": "PersistenceCompleteEventSwitch"}
FIELDS = ("Mode", "NotificationUrl", *SWITCHES.values())
SIGN_KEY_MAX = 32


class EventConfigRefused(ValueError):
    """A change that is refused before anything is sent; the message is one line."""


def describe(client: Client) -> dict:
    """The event config: Mode, NotificationUrl and the three switches."""
    answer = _call(client, "DescribeEventConfig", {})
    return {name: answer.get(name) for name in FIELDS}


def events_state(client: Client) -> int:
    """CountOfEventsToPull (VOD's own note: approximate, minutes behind)."""
    return _call(client, "DescribeEventsState", {})["CountOfEventsToPull"]


def change(client: Client, *, mode=None, url=None, switches=None, sign_key=None,
           allow_http=False) -> tuple[dict, dict]:
    """Apply the given changes; returns (before, after) as DescribeEventConfig answers them."""
    switches = {SWITCHES[name]: value for name, value in (switches or {}).items() if value is not None}
    if mode is not None and mode not in MODES:
        raise EventConfigRefused(f"mode must be PUSH or PULL, not {mode!r}")
    for name, value in switches.items():
        if value not in ("ON", "OFF"):
            raise EventConfigRefused(f"{name} must be ON or OFF, not {value!r}")
    if sign_key is not None and (len(sign_key) > SIGN_KEY_MAX or not sign_key.isascii()
                                 or not sign_key.isalnum()):
        raise EventConfigRefused(f"the sign key must be 1 to {SIGN_KEY_MAX} letters and digits")
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EventConfigRefused(f"the URL must be http(s)://host/path, not {url!r}")
    before = describe(client)
    after_mode = mode or before["Mode"]
    after_url = before["NotificationUrl"] if url is None else url
    if (after_mode == "PUSH" and (mode is not None or url is not None) and after_url
            and urlsplit(after_url).scheme != "https" and not allow_http):
        # VOD posts bodies (SourceContext, URLs) and, with a SignKey, a Sign anyone on the path
        # could replay: only https keeps them private (vod-spec §4).
        raise EventConfigRefused(f"refusing to push to {after_url!r}: not https "
                                 "(use an https URL, or --allow-http for a test setup)")
    params = {"Mode": after_mode, "NotificationUrl": after_url or "",
              **{name: before.get(name) or "OFF" for name in SWITCHES.values()}, **switches}
    if sign_key is not None:
        params["SignKey"] = sign_key
    _call(client, "ModifyEventConfig", params)
    return before, describe(client)


def _call(client, action, params):
    if client.sub_app_id is not None:
        params = {**params, "SubAppId": client.sub_app_id}
    raw = client.retry.retrying(vod_retryable)(client.vod().call, action, params)
    return json.loads(raw)["Response"]
