from receiver.gunicorn_conf import *  # noqa: F401,F403
