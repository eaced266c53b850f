# `gunicorn wsgi:app` from the checkout: a word on misspelt variables first (one may be why a
# setting is missing), then the receiver's settings, which stop gunicorn with one line when bad.
# (`vod-receiver serve` gives that word itself, before it starts gunicorn with the same settings.)
import sys as _sys

from receiver.config import unknown as _unknown

for _line in _unknown():
    print(f"Warning: {_line}", file=_sys.stderr)

from receiver.gunicorn_conf import *  # noqa: E402,F401,F403
