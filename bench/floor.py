"""The floor of this stack: a Flask app that only parses the JSON body and answers 200.

Served by the same gunicorn, with the same workers, it is what the receiver would cost if
storing an event were free; the benchmark reports the receiver's speed as a fraction of it.
"""
import json

from flask import Flask, request

app = Flask(__name__)


@app.post("/callbacks/vod")
def receive():
    """Parse the body and answer {}: the receiver's request, minus validating and storing it."""
    json.loads(request.get_data())
    return {}


@app.get("/livez")
def live():
    """Answer when up, for the benchmark to poll."""
    return {"status": "ok"}
