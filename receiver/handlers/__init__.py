"""The application's own handlers of stored events: register them here, `vod-receiver work` runs them.

    from receiver import handlers

    @handlers.on("NewFileUpload")
    def video_uploaded(event: handlers.Event):
        ...

or RECEIVER_HANDLERS="NewFileUpload=myapp.hooks:video_uploaded,*=myapp.hooks:log_all".
"""
from .registry import ALL, Event, Handler, HandlerConfigError, Registry

# The default registry (`handlers.registry`), which the decorator and RECEIVER_HANDLERS fill and
# the worker reads. It shadows the submodule's name on this package; the module stays importable
# as `from receiver.handlers.registry import Registry`.
registry = Registry()


def on(event_type: str):
    """Decorator: run the function for every stored event of `event_type` ("*": of every type)."""
    return registry.on(event_type)


__all__ = ["ALL", "Event", "Handler", "HandlerConfigError", "Registry", "on", "registry"]
