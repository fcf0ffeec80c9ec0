"""A real headless Chromium (Debian's, driven by Playwright) and a station served to it, for the page tests.

The ``browser`` fixture itself is in ``tests/conftest.py``.
"""

import threading
import time

from helpers import ROOT
from serving.api import create_app

SHOTS = ROOT / "docs" / "screenshots"


def serve(station):
    """Serve ``station``'s app with uvicorn on its configured port, from a thread; (server, thread)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(station), host="127.0.0.1", port=station.cfg.api.port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread


def new_page(browser, **kw):
    """A page that may evaluate scripts: the pages' own CSP forbids eval, which Playwright's wait_for_function
    needs; the header itself is tested with bypass off."""
    return browser.new_context(bypass_csp=True, **kw).new_page()


def log_in(page, url, user, pw):
    """Log in through the page's form and wait for the app to show."""
    page.goto(url)
    page.fill("#user", user)
    page.fill("#pass", pw)
    page.click("button[type=submit]")
    page.wait_for_selector("#app:not([hidden])")
