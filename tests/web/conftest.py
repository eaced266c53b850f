"""Fixtures of the operator page: the app with admin tokens, and a client signed in with one."""
import pytest

from .webpage import OTHER_TOKEN, TOKEN


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
