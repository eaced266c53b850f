"""Signing in and out of the operator page, the session cookie, CSRF, and the headers of every
page; and that none of it touches the callback path."""
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from factories import sample, upload
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from receiver import create_app, db
from receiver.models import Replay
from receiver.web import signin

from .webpage import OTHER_TOKEN, TOKEN, csrf

PAGES = ["/admin/", "/admin/events", "/admin/events/1", "/admin/rejections", "/admin/rejections/1",
         "/admin/uploads", "/admin/uploads/1", "/admin/handlers", "/admin/replays",
         "/admin/replays/1", "/admin/replay"]
POSTS = ["/admin/events/1/replay", "/admin/replay", "/admin/rejections/1/reparse"]
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


@pytest.mark.parametrize("tokens", ["", []])
def test_the_page_does_not_exist_without_admin_tokens(database_url, tmp_path, tokens):
    app = create_app({"RECEIVER_DATABASE_URL": database_url, "RECEIVER_SPOOL_DIR": str(tmp_path),
                      "RECEIVER_ADMIN_TOKENS": tokens})
    client = app.test_client()
    for path in ["/admin/sign-in", "/admin/static/web.css", *PAGES]:
        with client.get(path) as response:
            assert response.status_code == 404, path
    db.dispose(app)


@pytest.mark.parametrize("path", PAGES)
def test_every_page_redirects_to_sign_in_when_not_signed_in(anonymous, path):
    response = anonymous.get(path, query_string={"since": "1h"})
    assert response.status_code == 303
    location = urlsplit(response.headers["Location"])
    assert location.path == "/admin/sign-in"
    assert parse_qs(location.query) == {"next": [f"{path}?since=1h"]}


def test_a_query_string_that_is_not_utf8_still_redirects_to_sign_in(anonymous):
    # WSGI hands the raw bytes over as latin-1 text.
    response = anonymous.get("/admin/events", environ_overrides={"QUERY_STRING": "file_id=\xff"})
    assert response.status_code == 303
    assert parse_qs(urlsplit(response.headers["Location"]).query) == {
        "next": ["/admin/events?file_id=\ufffd"]}


def test_sign_in_form_is_labelled_and_sets_no_cookie(anonymous):
    response = anonymous.get("/admin/sign-in")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert '<label for="token">Admin token</label>' in page
    assert '<input id="token" name="token" type="password"' in page
    assert ">Sign in</button>" in page
    assert "Set-Cookie" not in response.headers


def test_a_wrong_token_keeps_where_to_go_after_signing_in(anonymous):
    page = anonymous.get("/admin/sign-in?next=/admin/events%3Fsince%3D1h").get_data(as_text=True)
    action = re.search(r'<form class="sign-in" method="post" action="([^"]+)">', page).group(1)
    action = action.replace("&amp;", "&")
    response = anonymous.post(action, data={"token": "wrong"})
    assert response.status_code == 401
    again = re.search(r'<form class="sign-in" method="post" action="([^"]+)">',
                      response.get_data(as_text=True)).group(1).replace("&amp;", "&")
    assert again == action
    response = anonymous.post(again, data={"token": TOKEN})
    assert response.headers["Location"] == "/admin/events?since=1h"


@pytest.mark.parametrize("token", ["", "wrong", TOKEN[:-1], TOKEN + "x", f"{TOKEN},{OTHER_TOKEN}"])
def test_a_wrong_token_gets_401_and_no_session(anonymous, token):
    response = anonymous.post("/admin/sign-in", data={"token": token})
    assert response.status_code == 401
    assert "That token is not valid." in response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers
    assert anonymous.get("/admin/events").status_code == 303


@pytest.mark.parametrize("token", [TOKEN, OTHER_TOKEN])
def test_either_token_signs_in_and_goes_to_next(anonymous, token):
    response = anonymous.post("/admin/sign-in", data={"token": token, "next": "/admin/events?since=1h"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin/events?since=1h"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{signin.COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age=43200"):
        assert attribute in cookie
    assert "Secure" not in cookie  # plain http here: a Secure cookie would never come back
    assert token not in cookie
    assert anonymous.get("/admin/events").status_code == 200


@pytest.mark.parametrize("https", [{"base_url": "https://localhost"},
                                   {"headers": {"X-Forwarded-Proto": "https"}}])
def test_the_cookie_is_secure_over_https_or_behind_a_tls_proxy(app, https):
    client = app.test_client()
    response = client.post("/admin/sign-in", data={"token": TOKEN}, **https)
    assert "; Secure" in response.headers["Set-Cookie"]


@pytest.mark.parametrize("next_", ["https://evil.example/", "//evil.example/admin", "/callbacks/vod",
                                   "/admin\\@evil.example", "javascript:alert(1)"])
def test_sign_in_never_redirects_off_the_page(anonymous, next_):
    response = anonymous.post("/admin/sign-in", data={"token": TOKEN, "next": next_})
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin/"


def test_removing_the_token_from_the_config_signs_its_sessions_out(app, client):
    assert client.get("/admin/events").status_code == 200
    app.config["RECEIVER_ADMIN_TOKENS"] = [OTHER_TOKEN]
    assert client.get("/admin/events").status_code == 303


def test_a_session_naming_a_token_not_configured_is_refused(app, anonymous):
    # Signed with the right secret, but its token fingerprint matches no configured token.
    tokens = app.config["RECEIVER_ADMIN_TOKENS"]
    key = signin.secret(tokens)
    forged = URLSafeTimedSerializer(key, salt="vodr-admin-session").dumps(
        {"sid": "s", "tok": signin.fingerprint(key, "not-a-token")})
    anonymous.set_cookie(signin.COOKIE, forged, path="/admin")
    assert anonymous.get("/admin/events").status_code == 303
    genuine = URLSafeTimedSerializer(key, salt="vodr-admin-session").dumps(
        {"sid": "s", "tok": signin.fingerprint(key, TOKEN)})
    anonymous.set_cookie(signin.COOKIE, genuine, path="/admin")
    assert anonymous.get("/admin/events").status_code == 200


def test_a_session_older_than_12_hours_is_refused(app, anonymous):
    class Past(TimestampSigner):
        def get_timestamp(self):
            return int(time.time()) - signin.MAX_AGE - 60

    key = signin.secret(app.config["RECEIVER_ADMIN_TOKENS"])
    old = URLSafeTimedSerializer(key, salt="vodr-admin-session", signer=Past).dumps({"sid": "s", "tok": signin.fingerprint(key, TOKEN)})
    anonymous.set_cookie(signin.COOKIE, old, path="/admin")
    assert anonymous.get("/admin/events").status_code == 303


@pytest.mark.parametrize("cookie", ["", "garbage", "e30.aaaa.bbbb"])
def test_a_tampered_cookie_is_refused(anonymous, cookie):
    anonymous.set_cookie(signin.COOKIE, cookie, path="/admin")
    assert anonymous.get("/admin/events").status_code == 303


def test_sign_out_needs_the_csrf_token_and_ends_the_session(client):
    response = client.post("/admin/sign-out")
    assert response.status_code == 400
    assert "Missing or wrong CSRF token" in response.get_data(as_text=True)
    assert client.get("/admin/events").status_code == 200

    response = client.post("/admin/sign-out", data={"csrf_token": csrf(client)})
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin/sign-in"
    assert client.get("/admin/events").status_code == 303


def test_every_page_has_a_sign_out_form_with_the_csrf_token(client):
    page = client.get("/admin/events").get_data(as_text=True)
    form = re.search(r'<form class="sign-out" method="post" action="/admin/sign-out">(.*?)</form>',
                     page, re.S).group(1)
    assert 'name="csrf_token" value="' in form and ">Sign out</button>" in form


@pytest.mark.parametrize("token", [None, "", "0" * 64, "wrong"])
@pytest.mark.parametrize("path", POSTS)
def test_a_post_without_the_right_csrf_token_gets_400_and_does_nothing(app, client, path, token):
    upload(app, 1)
    data = {"reason": "test", "csrf_token": token} if token is not None else {"reason": "test"}
    response = client.post(path, data=data)
    assert response.status_code == 400
    assert "Missing or wrong CSRF token" in response.get_data(as_text=True)
    with db.session_factory(app)() as session:
        assert session.query(Replay).count() == 0


def test_the_csrf_token_of_another_session_is_refused(app, client):
    other = app.test_client()
    other.post("/admin/sign-in", data={"token": TOKEN})
    response = client.post("/admin/sign-out", data={"csrf_token": csrf(other)})
    assert response.status_code == 400


@pytest.mark.parametrize("path", ["/admin/events", "/admin/events/999", "/admin/sign-in",
                                  "/admin/static/web.css", "/admin/events?limit=0"])
def test_every_page_sends_the_security_headers(client, path):
    with client.get(path) as response:
        headers = response.headers
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"


def test_pages_are_html_in_english_with_one_h1_main_and_nav(client):
    page = client.get("/admin/events").get_data(as_text=True)
    assert '<html lang="en">' in page
    assert page.count("<h1") == 1 and "<main>" in page and "<nav" in page
    assert "<script" not in page and "style=" not in page


def test_the_stylesheet_is_served_from_the_package(client):
    with client.get("/admin/static/web.css") as response:
        assert response.status_code == 200 and response.mimetype == "text/css"
        assert b".visually-hidden" in response.data


def test_the_callback_path_gets_no_hook_no_session_and_no_cookie(database_url, tmp_path, app):
    plain = create_app({"RECEIVER_DATABASE_URL": database_url, "RECEIVER_SPOOL_DIR": str(tmp_path)})
    assert app.secret_key is None
    assert app.before_request_funcs.get(None, []) == plain.before_request_funcs.get(None, [])
    assert app.after_request_funcs.get(None, []) == plain.after_request_funcs.get(None, [])
    response = app.test_client().post("/callbacks/vod", data=sample("v3-push-newfileupload.json"))
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert "Content-Security-Policy" not in response.headers
    db.dispose(plain)


def test_an_unknown_id_is_a_404_page(client):
    response = client.get("/admin/events/999")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "No event with this id." in response.get_data(as_text=True)
