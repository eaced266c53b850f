"""A module registering its handler with the decorator (RECEIVER_HANDLERS=decorated_hooks)."""
from receiver import handlers


@handlers.on("NewFileUpload")
def video_uploaded(event):
    """Does nothing; test_registry checks it is registered by importing this module."""
