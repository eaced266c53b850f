"""vod-receiver: receive, validate and durably store Tencent Cloud VOD event notifications."""
import os

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import config as _config


class _Flask(Flask):
    def ensure_sync(self, func):
        # Flask asks, for every hook and view of every request, whether it is a coroutine
        # function; the receiver defines none, and the asking cost more than some hooks do.
        return func


def create_app(config=None):
    """Create the receiver app; `config` overrides settings read from the environment."""
    app = _Flask(__name__, instance_relative_config=True)
    app.config.update(_config.from_env())
    app.config.update(config or {})
    _config.check(app.config)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config["RECEIVER_DATABASE_URL"] = (
        app.config["RECEIVER_DATABASE_URL"]
        or f"sqlite:///{os.path.join(app.instance_path, 'receiver.db')}"
    )
    app.config["RECEIVER_SPOOL_DIR"] = app.config["RECEIVER_SPOOL_DIR"] or os.path.join(
        app.instance_path, "spool"
    )
    if app.config["RECEIVER_TRUSTED_PROXIES"] > 0:
        # Trust exactly that many X-Forwarded-For hops, counted from the right: the leftmost
        # entry is whatever the client chose to send.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["RECEIVER_TRUSTED_PROXIES"])

    from . import admin, callbacks, cli, db, errors, health, logs, metrics, web

    logs.init_app(app)
    callbacks.redact_logs(app)
    db.init_app(app)
    errors.init_app(app)
    metrics.init_app(app)
    health.init_app(app)
    app.register_blueprint(callbacks.bp)
    admin.init_app(app)
    web.init_app(app)
    cli.init_app(app)
    return app
