"""What the operator page's tests share: the admin tokens, and the CSRF token of a page."""
import re

TOKEN = "web-test-token-0123456789"
OTHER_TOKEN = "web-test-token-other-9876543210"


def csrf(client, path="/admin/events"):
    """The CSRF token from the forms of the page at `path`."""
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)
