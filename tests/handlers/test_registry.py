"""The registry: the decorator, "*", configuration by import path and its one-line errors."""
import pytest

from receiver import handlers
from receiver.handlers import HandlerConfigError, Registry


def uploaded(event):
    """A handler RECEIVER_HANDLERS can name (test_registry:uploaded)."""


def everything(event):
    """Another, for "*"."""


NOT_CALLABLE = 42


def test_decorator_registers_for_the_type_and_star_for_every_type():
    registry = Registry()

    @registry.on("NewFileUpload")
    def first(event):
        pass

    @registry.on("*")
    def any_event(event):
        pass

    assert [h.func for h in registry.handlers_for("NewFileUpload")] == [first, any_event]
    assert [h.func for h in registry.handlers_for("FileDeleted")] == [any_event]
    assert registry.handles("FileDeleted")
    assert registry.handlers_for("NewFileUpload")[0].name.endswith(
        "test_decorator_registers_for_the_type_and_star_for_every_type.<locals>.first")


def test_registering_the_same_function_twice_keeps_one():
    registry = Registry()
    registry.add("NewFileUpload", uploaded)
    registry.add("NewFileUpload", uploaded)
    assert len(registry.handlers_for("NewFileUpload")) == 1


def test_module_level_on_fills_the_default_registry():
    try:
        decorated = handlers.on("PullComplete")(uploaded)
        assert decorated is uploaded
        assert [h.func for h in handlers.registry.handlers_for("PullComplete")] == [uploaded]
    finally:
        handlers.registry.clear()


def test_load_imports_each_path_for_its_type():
    registry = Registry()
    registry.load("NewFileUpload=test_registry:uploaded, *=test_registry:everything")
    assert [h.name for h in registry.handlers_for("NewFileUpload")] == [
        "test_registry:uploaded", "test_registry:everything"]
    assert registry.event_types() == {"NewFileUpload", "*"}
    assert not Registry().load("")


@pytest.mark.parametrize("spec, message", [
    ("NewFileUpload", "'NewFileUpload' is neither EventType=module:function nor a module"),
    ("NewFileUpload=test_registry.uploaded", "is not EventType=module:function"),
    ("NewFileUpload=no_such_module_here:f", "cannot import 'no_such_module_here'"),
    ("NewFileUpload=test_registry:missing", "has no 'missing'"),
    ("NewFileUpload=test_registry:NOT_CALLABLE", "is not callable"),
    ("New File=test_registry:uploaded", "not an event type"),
])
def test_bad_specs_fail_with_one_line_naming_the_problem(spec, message):
    with pytest.raises(HandlerConfigError, match=message) as raised:
        Registry().load(spec)
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith("RECEIVER_HANDLERS: ")


def test_a_bare_module_name_imports_it_so_its_decorators_register():
    try:
        handlers.registry.load("decorated_hooks")
        assert [h.name for h in handlers.registry.handlers_for("NewFileUpload")] == [
            "decorated_hooks:video_uploaded"]
    finally:
        handlers.registry.clear()
