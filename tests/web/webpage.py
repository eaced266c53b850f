"""Fixtures of the operator page: the app with admin tokens, and a client signed in with one.

Not a conftest.py: tests/factories.py imports tests/conftest.py by the name `conftest`, which a
second conftest.py here would take over. The test modules import these fixtures by name.
"""
import re

import pytest

TOKEN = "web-test-token-0123456789"
OTHER_TOKEN = "web-test-token-other-9876543210"


@pytest.fixture
def app(make_app):
    """The receiver with two admin tokens, so the operator page exists."""
    return make_app(RECEIVER_ADMIN_TOKENS=[TOKEN, OTHER_TOKEN])


@pytest.fixture
def anonymous(app):
    """A client that has not signed in."""
    return app.test_client()


@pytest.fixture
def client(app):
    """A client signed in with TOKEN."""
    client = app.test_client()
    response = client.post("/admin/sign-in", data={"token": TOKEN})
    assert response.status_code == 303
    return client


def csrf(client, path="/admin/events"):
    """The CSRF token from the forms of the page at `path`."""
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)
