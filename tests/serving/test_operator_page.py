"""A real headless Chromium (Debian's, driven by Playwright) reviews a FAIL with the F key."""

import shutil
import threading
import time
from pathlib import Path

import pytest

from serving.api import create_app
from serving.station.runtime import Station
from services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.services]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture()
def served(make_config):
    import uvicorn

    port = free_port()
    station = Station(make_config(api={"port": port})).start()
    assert station.wait(30)
    server = uvicorn.Server(uvicorn.Config(create_app(station), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield station, f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(5)
    station.stop()


def test_login_see_fail_review_with_f_key(served, tmp_path, capsys):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is missing: `apt-get install chromium` (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    station, url = served
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)  # fresh temp profile
        page = browser.new_page()
        page.goto(url)
        page.fill("#user", "olga")
        page.fill("#pass", "op-pass")
        page.click("button[type=submit]")
        page.wait_for_selector("#app:not([hidden])")
        page.wait_for_function("document.querySelector('#verdict').textContent === 'FAIL' || document.querySelector('#nfail').textContent !== '0'")
        assert int(page.text_content("#nfail")) == station.state.counts["FAIL"] > 0
        page.wait_for_selector(".item.sel img[src^='blob:']")
        times = []
        for _ in range(3):
            target = int(page.get_attribute(".item.sel", "data-id"))
            t0 = time.perf_counter()
            page.keyboard.press("F")
            page.wait_for_function(f"document.querySelector('#rmsg').textContent.includes('defect') && "
                                   f"!document.querySelector('.item[data-id=\"{target}\"]')")
            times.append(time.perf_counter() - t0)
            assert station.evidence.get(target).disposition == "defect"
            assert station.evidence.get(target).disposition_user == "olga"
            page.wait_for_selector(".item.sel img[src^='blob:']")
        page.screenshot(path=str(tmp_path / "operator.png"))
        browser.close()
    with capsys.disabled():
        print(f"\nreview decision round trip (key press -> stored -> next suspect shown): "
              f"{', '.join(f'{t * 1000:.0f} ms' for t in times)}")
    assert station.audit.entries()[-1]["action"] == "disposition"
