"""The operator page: HTML under /admin/ over the stored events, rejections, uploads, handlers
and replays, for people with an admin token (views.py; sign-in and CSRF in signin.py)."""
from .views import bp


def init_app(app):
    """Register the operator page if RECEIVER_ADMIN_TOKENS names at least one token."""
    if app.config["RECEIVER_ADMIN_TOKENS"]:
        app.register_blueprint(bp)
