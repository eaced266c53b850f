"""How the operator page writes times, ages and stored bodies (pure functions, no Flask)."""
import json
from datetime import datetime, timezone


def utc(moment: datetime | None) -> str:
    """`moment` in UTC, ISO-like to the second: 2026-11-01 12:00:00 UTC; "" for None."""
    if moment is None:
        return ""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """A length of time in its largest sensible unit: 45 s, 3 min, 5 h, 2 days; "" for None."""
    if seconds is None:
        return ""
    seconds = int(max(0, seconds))
    for unit, size, name in (("day", 86400, " days"), ("h", 3600, " h"), ("min", 60, " min")):
        if seconds >= size:
            count = seconds // size
            return f"{count} day" if unit == "day" and count == 1 else f"{count}{name}"
    return f"{seconds} s"


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """How long before `now` `moment` was: "3 min ago" (or "in 3 min" for a future one)."""
    if moment is None:
        return ""
    seconds = ((now or datetime.now(timezone.utc)) - moment).total_seconds()
    if -1 < seconds < 1:
        return "just now"
    return f"{duration(seconds)} ago" if seconds > 0 else f"in {duration(-seconds)}"


def body_text(body: bytes) -> str:
    """A stored body for reading: pretty-printed JSON when it parses, else its text, with any
    bytes that are not UTF-8 written as \\xNN escapes."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("utf-8", "backslashreplace")
    try:
        document = json.loads(text)
    except ValueError:
        return text
    # Not for a bare number or string: pretty-printing would only re-spell what was sent.
    if not isinstance(document, (dict, list)):
        return text
    return json.dumps(document, indent=2, ensure_ascii=False)
