"""One JSON error shape for every error: {"error": {"code", "message", "details"?}}."""
from flask import current_app
from werkzeug.exceptions import HTTPException, InternalServerError

from .events import Refusal


class ApiError(Exception):
    """An error a view raises to answer in the one shape, e.g. a bad query parameter."""

    def __init__(self, code, message, status=400, details=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = details


def error_response(code, message, status, details=None):
    """Build the one error shape; views raise instead of calling this."""
    error = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}, status


def init_app(app):
    """Register the handlers that turn every error into the JSON shape."""
    app.register_error_handler(Refusal, _refusal)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(InternalServerError, _internal_error)


def _refusal(exc):
    return (*error_response(exc.reason, exc.message, exc.status, exc.details), exc.headers or {})


def _api_error(exc):
    return error_response(exc.code, exc.message, exc.status, exc.details)


def _http_error(exc):
    code = exc.name.lower().replace(" ", "_")
    response = error_response(code, exc.description, exc.code)
    headers = exc.get_response().headers
    return (*response, {k: v for k, v in headers.items() if k in ("Allow", "WWW-Authenticate")})


def _internal_error(exc):
    original = getattr(exc, "original_exception", None)
    message = "The server could not complete the request."
    if current_app.debug and original is not None:
        message = f"{type(original).__name__}: {original}"
    return error_response("internal_server_error", message, 500)
