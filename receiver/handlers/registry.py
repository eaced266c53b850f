"""Which of the application's callables handle which event types: the decorator, configuration by
import path, and the typed event a handler receives. Pure: no Flask, no database."""
import importlib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime
from typing import Any, Callable, Optional

ALL = "*"  # registered for every event type
# An event type as VOD names them (or "*"); a dotted module path, a colon, a dotted attribute.
_EVENT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,127}\Z|\*\Z")
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*\Z")
_MODULE = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*\Z")


class HandlerConfigError(ValueError):
    """RECEIVER_HANDLERS (or a registration) that cannot work; the message is one line."""


@dataclass(frozen=True)
class Event:
    """One stored VOD event as a handler receives it: parsed fields, the payload and its exact bytes."""

    id: int
    event_type: str
    format: str  # v3 or v2
    received_at: datetime
    channel: str  # push, pull or replay
    delivery_count: int
    file_id: Optional[str]
    file_ids: Optional[list[str]]
    media_url: Optional[str]
    source_type: Optional[str]
    source_context: Optional[str]
    procedure_task_id: Optional[str]
    review_audio_video_task_id: Optional[str]
    task_id: Optional[str]
    status: Optional[str]
    event_handle: Optional[str]
    media_name: Optional[str]
    media_type: Optional[str]
    storage_region: Optional[str]
    class_id: Optional[int]
    media_created_at: Optional[datetime]
    size: Optional[int]
    duration: Optional[float]
    width: Optional[int]
    height: Optional[int]
    body: bytes = field(repr=False)  # exactly as received
    attempt: int = 1  # which round of this event's handlers this is (1 on the first run)
    # The upload (receiver.models.Upload) a NewFileUpload completes, found by FileId or SourceContext.
    upload: Any = None

    @cached_property
    def payload(self) -> dict:
        """The body decoded as JSON, on first use (the receiver stored it only after it parsed)."""
        return json.loads(self.body)


@dataclass(frozen=True)
class Handler:
    """A registered callable and the name its attempts are recorded under (module:qualname)."""

    name: str
    func: Callable[[Event], Any]


class Registry:
    """Event type -> the handlers to run for it, in registration order; "*" for every type."""

    def __init__(self):
        self._by_type: dict[str, list[Handler]] = {}

    def on(self, event_type: str):
        """Decorator: run the function for every event of `event_type` ("*": every event)."""
        def register(func):
            self.add(event_type, func)
            return func
        return register

    def add(self, event_type: str, func: Callable, name: str | None = None) -> Handler:
        """Register `func` for `event_type`; registering the same function again changes nothing."""
        if not isinstance(event_type, str) or not _EVENT_TYPE.match(event_type):
            raise HandlerConfigError(f"not an event type: {event_type!r} (a VOD EventType or '*')")
        if not callable(func):
            raise HandlerConfigError(f"handler for {event_type} is not callable: {func!r}")
        name = name or handler_name(func)
        handlers = self._by_type.setdefault(event_type, [])
        for known in handlers:
            if known.name == name:
                if known.func is not func and getattr(known.func, "__wrapped__", None) is not func:
                    # Attempts are recorded (and successes remembered) by name: two functions
                    # under one name would share a history.
                    raise HandlerConfigError(f"two different handlers named {name} for {event_type}")
                return known
        handler = Handler(name, func)
        handlers.append(handler)
        return handler

    def load(self, spec: str) -> list[Handler]:
        """Register handlers from 'EventType=module:function,…' (RECEIVER_HANDLERS); one-line errors.

        An item that is only a module name imports that module, whose @handlers.on decorators
        register its handlers (in the default registry).
        """
        added = []
        for item in (part.strip() for part in (spec or "").split(",")):
            if not item:
                continue
            if _MODULE.match(item):
                try:
                    importlib.import_module(item)
                except Exception as exc:  # the application's import error, as a config error
                    raise HandlerConfigError(
                        f"RECEIVER_HANDLERS: {item!r} is neither EventType=module:function nor a "
                        f"module to import ({type(exc).__name__}: {_first_line(exc)})") from None
                continue
            event_type, equals, target = (s.strip() for s in item.partition("="))
            if not equals or not _TARGET.match(target):
                raise HandlerConfigError(
                    f"RECEIVER_HANDLERS: {item!r} is not EventType=module:function "
                    "(e.g. NewFileUpload=myapp.hooks:video_uploaded)")
            try:
                added.append(self.add(event_type, resolve(target), name=target))
            except HandlerConfigError as exc:
                message = str(exc)
                raise HandlerConfigError(message if message.startswith("RECEIVER_HANDLERS")
                                         else f"RECEIVER_HANDLERS: {message}") from None
        return added

    def handlers_for(self, event_type: str) -> list[Handler]:
        """The handlers to run for an event of `event_type`: its own, then those for "*"."""
        return [*self._by_type.get(event_type, ()), *self._by_type.get(ALL, ())] \
            if event_type != ALL else list(self._by_type.get(ALL, ()))

    def event_types(self) -> set[str]:
        """Event types with a handler of their own ("*" included when registered)."""
        return {event_type for event_type, handlers in self._by_type.items() if handlers}

    def handles(self, event_type: str) -> bool:
        """Whether any handler runs for `event_type`."""
        return bool(self._by_type.get(event_type) or self._by_type.get(ALL))

    def clear(self):
        """Forget every registration (tests)."""
        self._by_type.clear()

    def __bool__(self):
        return any(self._by_type.values())


def resolve(target: str) -> Callable:
    """The callable that 'module:attribute' names; HandlerConfigError (one line) if there is none."""
    module_name, _, attribute = target.partition(":")
    obj = _import(module_name, target)
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HandlerConfigError(f"{module_name!r} has no {attribute!r} (from {target})") from None
    if not callable(obj):
        raise HandlerConfigError(f"{target} is not callable")
    return obj


def _import(module_name, target):
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # any error importing the application's module is a config error
        raise HandlerConfigError(f"RECEIVER_HANDLERS: cannot import {module_name!r} for {target}: "
                                 f"{type(exc).__name__}: {_first_line(exc)}") from None


def _first_line(exc):
    return (str(exc).splitlines() or [""])[0]


def handler_name(func) -> str:
    """module:qualname, the name a function's attempts are recorded under."""
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}:{qualname}"
