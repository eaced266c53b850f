"""The operator page (/admin/) in a real headless Chromium: sign in, the overview's numbers, the
event list's filter, an event's exact body, replaying a failed handler, the CSRF refusal, signing
out, labelled form fields, and reading without JavaScript.

The screenshots in docs/screenshots/ are written by these tests.
"""
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import func, select

from .conftest import UPLOADS
from .hooks import FAILING
from receiver.models import Event, HandlerAttempt, HandlerState, Replay

UPLOADS_FILE_ID_A = UPLOADS["order-a"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
FIELDS = "input:not([type=hidden]):not([type=submit]):not([type=button]):not([type=reset]), select, textarea"


def assert_labelled(page):
    """Every form field on the page has a <label for> naming it, or an aria-label."""
    unlabelled = []
    for field in page.locator(FIELDS).all():
        field_id, aria = field.get_attribute("id"), field.get_attribute("aria-label")
        if not (aria or field_id and page.locator(f'label[for="{field_id}"]').count()):
            unlabelled.append(field.get_attribute("name") or field_id)
    assert unlabelled == [], f"form fields without a label on {page.url}: {unlabelled}"


def visit(page, path):
    """Open `path` (expecting a page, not an error) and check its form fields are labelled."""
    response = page.goto(path)
    assert response.status == 200, (path, response.status, page.inner_text("body")[:500])
    assert_labelled(page)
    return response


def metric(page, name):
    """The number shown by the overview's element data-metric=`name`."""
    return int(page.locator(f'[data-metric="{name}"]').inner_text().strip().replace(",", ""))


def follow(page, link):
    """Click `link` and wait for the page it leads to (count() and url do not wait by themselves)."""
    with page.expect_navigation() as navigation:
        link.click()
    assert navigation.value.status == 200, (page.url, navigation.value.status)
    return navigation.value


def rows(page, table):
    """The body rows of the table with id `table`."""
    return page.locator(f"#{table} tbody tr")


def test_signing_in_leads_back_to_the_page_asked_for(browse, site, sign_in):
    page = browse()
    page.goto("/admin/events?source_context=order-a")
    url = urlsplit(page.url)
    assert url.path == "/admin/sign-in"
    assert parse_qs(url.query)["next"][0].startswith("/admin/events")
    assert_labelled(page)

    assert sign_in(page, token="not-the-token", path=page.url).status == 401
    assert "That token is not valid." in page.inner_text("body")

    sign_in(page, path=page.url)
    assert urlsplit(page.url).path == "/admin/events"
    [cookie] = [c for c in page.context.cookies() if c["name"] == "vodr_admin"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/admin")


def test_every_page_but_sign_in_asks_to_sign_in_first(browse, site):
    page = browse()
    event_id = site.event_ids["order-a"]
    for path in ("/admin/", "/admin/events", f"/admin/events/{event_id}", "/admin/replay", "/admin/replays",
                 "/admin/replays/1", "/admin/rejections", f"/admin/rejections/{site.rejection_id}",
                 "/admin/uploads", "/admin/uploads/1", "/admin/handlers"):
        response = page.request.get(path, max_redirects=0)
        location = urlsplit(response.headers.get("location", ""))
        assert (response.status, location.path) == (303, "/admin/sign-in"), path
        assert parse_qs(location.query)["next"] == [path], path


def test_the_overview_shows_what_was_posted(page, site):
    visit(page, "/admin/")
    for name, posted in site.posted.items():
        assert metric(page, name) == posted, name
    assert metric(page, "deliveries") == sum(metric(page, n) for n in ("events", "duplicates", "rejections"))
    assert metric(page, "spool-depth") == 0
    failed = len(site.scalars(select(HandlerState.event_id).where(HandlerState.state == "failed")))
    assert metric(page, "handlers-failed") == failed
    assert metric(page, "handlers-dead") == 0
    # Two charts, each an <svg> with a <title> and a hidden table of its numbers: every callback
    # posted is in the last 24 hours and the last 30 days.
    charts = page.locator("figure", has=page.locator("svg"))
    assert charts.count() == 2
    for chart in charts.all():
        assert chart.locator("svg > title").count() == 1
        callbacks = chart.locator("table tbody tr td:nth-of-type(1)").all_inner_texts()
        assert sum(int(n) for n in callbacks) == site.posted["deliveries"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "overview.png", full_page=True)

    # Each number links to the list behind it.
    follow(page, page.locator('[data-metric="events"]'))
    assert rows(page, "events").count() == site.posted["events"]
    page.go_back()
    follow(page, page.locator('[data-metric="rejections-invalid_json"]'))
    assert parse_qs(urlsplit(page.url).query)["reason"] == ["invalid_json"]
    assert rows(page, "rejections").count() == 1


def test_an_upload_still_waiting_for_its_callback_is_found_from_the_overview(page, site):
    visit(page, "/admin/")
    assert metric(page, "uploads-waiting") == 1
    follow(page, page.locator('[data-metric="uploads-waiting"]'))
    assert_labelled(page)
    [waiting] = rows(page, "uploads").all_inner_texts()
    assert "order-waiting" in waiting and "committed" in waiting
    follow(page, rows(page, "uploads").first.locator("a").first)
    assert page.locator("section", has=page.locator("#event")).inner_text().endswith("none yet")
    # The notified one links to the callback's event.
    visit(page, "/admin/uploads?status=notified")
    assert "order-a" in rows(page, "uploads").inner_text()
    follow(page, rows(page, "uploads").first.locator("a").first)
    follow(page, page.get_by_role("link", name=f"Event {site.event_ids['order-a']}"))
    assert page.locator("#body").inner_text().count(UPLOADS_FILE_ID_A) == 2  # FileId and Vid


def test_events_are_filtered_by_source_context(page, site):
    visit(page, "/admin/events")
    assert rows(page, "events").count() == site.posted["events"]
    page.get_by_label(re.compile("source.?context", re.I)).fill("order-b")
    with page.expect_navigation():
        page.get_by_label(re.compile("source.?context", re.I)).press("Enter")
    assert parse_qs(urlsplit(page.url).query)["source_context"] == ["order-b"]
    assert_labelled(page)
    [row] = rows(page, "events").all()
    assert "5285890784273533002" in row.inner_text()

    follow(page, row.get_by_role("link").first)
    assert urlsplit(page.url).path == f"/admin/events/{site.event_ids['order-b']}"


def test_the_event_list_pages_with_next_links(page, site):
    visit(page, "/admin/events?limit=2")
    seen = []
    while True:
        seen += rows(page, "events").all_inner_texts()
        following = page.locator('a[rel="next"]')
        if not following.count():
            break
        follow(page, following)
    assert len(seen) == len(set(seen)) == site.posted["events"]


def test_an_event_page_shows_its_exact_body(page, site):
    visit(page, f"/admin/events/{site.event_ids['order-a']}")
    for heading in ("Fields", "Deliveries", "Headers", "Body", "Upload", "Handler attempts"):
        assert page.get_by_role("heading", name=heading).count() == 1, heading
    body = page.locator("pre#body").inner_text()
    assert json.loads(body) == json.loads(site.bodies["order-a"])
    assert "5285890784273533001" in body  # every digit of the FileId, not a float's
    deliveries = page.locator("section", has=page.get_by_role("heading", name="Deliveries"))
    assert deliveries.locator("xpath=.//dt[normalize-space()='Count']/following-sibling::dd[1]").inner_text() == "2"


def test_a_refused_body_is_shown_byte_for_byte_and_can_be_parsed_again(page, site):
    visit(page, "/admin/rejections")
    [row] = rows(page, "rejections").all()
    assert "invalid_json" in row.inner_text()
    follow(page, row.get_by_role("link").first)
    assert urlsplit(page.url).path == f"/admin/rejections/{site.rejection_id}"
    assert_labelled(page)
    assert page.locator("pre#body").inner_text() == site.refused.decode()

    # Today's parser refuses it too: the re-parse is recorded with its reason, and nothing is stored.
    page.get_by_label("Reason").fill("browser test: parse it again")
    follow(page, page.get_by_role("button", name="Re-parse"))
    assert urlsplit(page.url).path == f"/admin/rejections/{site.rejection_id}"
    reparsed = re.search(r"Re-parsed \(replay (\d+)\)", page.inner_text("body"))
    assert reparsed, page.inner_text("body")[:1000]
    visit(page, f"/admin/replays/{reparsed[1]}")
    assert "browser test: parse it again" in page.inner_text("body")
    assert len(site.scalars(select(Event.id))) == site.posted["events"]


def test_replaying_a_failed_handler_shows_the_new_attempt(page, site, poll):
    event_id = site.event_ids[FAILING]
    visit(page, "/admin/handlers?state=failed")
    [failed] = rows(page, "handlers").all()
    assert "told to fail" in failed.inner_text()
    follow(page, failed.get_by_role("link", name=str(event_id)))
    assert urlsplit(page.url).path == f"/admin/events/{event_id}"
    assert_labelled(page)
    [attempt] = rows(page, "attempts").all()
    assert "failed" in attempt.inner_text()
    assert "told to fail" in page.locator("#attempts details").first.inner_text()

    (site.hooks_dir / "fail").unlink()  # the handler is fixed
    page.get_by_label("Reason").fill("browser test: the hook is fixed")
    follow(page, page.get_by_role("button", name="Replay"))
    assert urlsplit(page.url).path == f"/admin/events/{event_id}"
    queued = re.search(r"Queued for the worker \(replay (\d+)\)", page.inner_text("body"))
    assert queued, page.inner_text("body")[:1000]

    def shown():  # the page as an operator sees it: reloaded until the worker's attempt is there
        page.reload()
        return "succeeded" in page.locator("#attempts").inner_text()

    poll(shown, "the replayed attempt showing on the event page")
    outcomes = [row.inner_text() for row in rows(page, "attempts").all()]
    assert len(outcomes) == 2 and "succeeded" in outcomes[-1], outcomes
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "event.png", full_page=True)

    visit(page, f"/admin/replays/{queued[1]}")
    assert "browser test: the hook is fixed" in page.inner_text("body")
    visit(page, "/admin/handlers?state=failed")
    assert rows(page, "handlers").count() == 0


def test_replaying_the_events_a_filter_selects(page, site, poll):
    event_id = site.event_ids["order-b"]
    visit(page, "/admin/events?source_context=order-b")
    follow(page, page.get_by_role("link", name="Replay these…"))
    assert_labelled(page)
    assert page.locator("#count").inner_text() == "1 event match."
    page.get_by_label("Reason").fill("browser test: order-b again")
    follow(page, page.get_by_role("button", name="Replay 1 event"))
    assert re.fullmatch(r"/admin/replays/\d+", urlsplit(page.url).path)
    assert "browser test: order-b again" in page.inner_text("body")
    # Settled before the next test counts attempts: the worker ran the handler a second time.
    poll(lambda: site.scalars(select(HandlerAttempt.outcome).where(HandlerAttempt.event_id == event_id))
         == ["succeeded", "succeeded"], "the replayed event's second attempt")


def test_a_post_without_the_csrf_token_is_refused_and_does_nothing(page, site):
    event_id = site.event_ids["order-a"]
    replays = site.scalars(select(func.count()).select_from(Replay))
    attempts = site.scalars(select(func.count()).select_from(HandlerAttempt))
    for form in ({"reason": "forged"}, {"reason": "forged", "csrf_token": "not-the-token"}):
        response = page.request.post(f"/admin/events/{event_id}/replay", form=form, max_redirects=0)
        assert response.status == 400
        assert "Missing or wrong CSRF token" in response.text()
    response = page.request.post("/admin/sign-out", form={}, max_redirects=0)
    assert response.status == 400
    assert site.scalars(select(func.count()).select_from(Replay)) == replays
    assert site.scalars(select(func.count()).select_from(HandlerAttempt)) == attempts
    assert visit(page, "/admin/").url.endswith("/admin/")  # still signed in


def test_every_section_opens_from_the_header_with_its_fields_labelled(page, site):
    sections = page.get_by_role("navigation", name="Sections").get_by_role("link")
    names = sections.all_inner_texts()
    assert names == ["Overview", "Events", "Rejections", "Uploads", "Handlers", "Replays"]
    for name in names:
        follow(page, sections.filter(has_text=name))
        assert_labelled(page)


def test_signing_out_forgets_the_sign_in(page, site):
    visit(page, "/admin/")
    follow(page, page.get_by_role("button", name="Sign out"))
    assert urlsplit(page.url).path == "/admin/sign-in"
    page.goto("/admin/")
    assert urlsplit(page.url).path == "/admin/sign-in"


def test_the_pages_read_without_javascript(browse, site, sign_in):
    page = browse(java_script_enabled=False)
    sign_in(page)
    assert metric(page, "events") == site.posted["events"]
    visit(page, f"/admin/events/{site.event_ids['order-a']}")
    assert json.loads(page.locator("pre#body").inner_text()) == json.loads(site.bodies["order-a"])
    # Filtering is a plain form: it works without scripts too.
    visit(page, "/admin/events")
    page.get_by_label(re.compile("source.?context", re.I)).fill("order-a")
    with page.expect_navigation():
        page.get_by_label(re.compile("source.?context", re.I)).press("Enter")
    assert "5285890784273533001" in rows(page, "events").inner_text()
