"""The operator page in a real headless Chromium (Debian's, driven by Playwright): review by touch and by key,
a page that never shows a green PASS while parts are unprotected, layouts from a panel to a wall screen."""

import shutil
import time
from pathlib import Path

import pytest

from browser import SHOTS, new_page, serve
from browser import log_in as shared_log_in
from helpers import ROOT
from serving.errors import LineguardError
from serving.station.runtime import Station
from services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.services]
SIZES = [(800, 480), (1280, 800), (1920, 1080)]


@pytest.fixture()
def served(make_config):
    station = Station(make_config(api={"port": free_port()})).start()
    assert station.wait(30)
    server, thread = serve(station)
    yield station, f"http://127.0.0.1:{station.cfg.api.port}/"
    server.should_exit = True
    thread.join(5)
    station.stop()


def log_in(page, url, user="olga", pw="op-pass"):
    shared_log_in(page, url, user, pw)


def test_review_by_touch_and_by_key_and_the_session_survives_a_reload(served, browser, capsys):
    station, url = served
    page = new_page(browser, viewport={"width": 1280, "height": 800}, has_touch=True)
    log_in(page, url)
    page.wait_for_function("document.querySelector('#nfail').textContent !== '0'")
    assert int(page.text_content("#nfail")) == station.state.counts["FAIL"] > 0
    page.wait_for_selector("#crop[src^='blob:']")  # the last part's own picture, whatever its verdict
    assert f"#{station.state.last.seq} " in page.text_content("#part")
    page.wait_for_selector(".item.sel img[src^='blob:']")
    times = []
    for how in ("tap", "key", "tap-class"):
        target = int(page.get_attribute(".item.sel", "data-id"))
        t0 = time.perf_counter()
        if how == "tap":
            page.tap("#btnFail")
        elif how == "key":
            page.keyboard.press("P")
        else:
            page.tap("#classes button >> nth=0")
            page.tap("#btnFail")
        page.wait_for_function(f"!document.querySelector('.item[data-id=\"{target}\"]')")
        times.append(time.perf_counter() - t0)
        rec = station.evidence.get(target)
        assert rec.disposition == ("false_alarm" if how == "key" else "defect") and rec.disposition_user == "olga"
        if how == "tap-class":
            assert rec.disposition_class == [*station.classes(), "other"][0]  # the first quick tag
    assert max(times) < 5.0  # the spec's 5 s per decision; the figures are printed below
    with capsys.disabled():
        print("\nreview decision round trip (tap or key -> stored -> next suspect): "
              + ", ".join(f"{t * 1000:.0f} ms" for t in times))
    ids = [int(i) for i in page.eval_on_selector_all(".item", "els => els.map(e => e.dataset.id)")]
    assert len(ids) == len(set(ids))  # the queue never shows a record twice
    page.reload()
    page.wait_for_selector("#app:not([hidden])")  # still logged in after a reload
    assert page.is_hidden("#login")


def test_layouts_keep_verdict_and_review_controls_on_screen(served, browser):
    station, url = served
    SHOTS.mkdir(parents=True, exist_ok=True)
    for w, h in SIZES:
        page = new_page(browser, viewport={"width": w, "height": h})
        log_in(page, url)
        page.wait_for_selector(".item.sel img[src^='blob:']")
        page.wait_for_selector("#crop[src^='blob:']")
        for sel in ("#verdict", "#btnPass", "#btnFail", "#classes button >> nth=0", ".item >> nth=0"):
            box = page.locator(sel).bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= h + 1 and box["x"] + box["width"] <= w + 1, \
                (w, h, sel, box)
        assert page.evaluate("document.scrollingElement.scrollHeight") <= h + 1  # nothing below the fold
        page.screenshot(path=str(SHOTS / f"operator-{w}x{h}.png"))
        page.close()


def test_an_unprotected_line_is_the_dominant_state_never_a_green_pass(make_config, browser):
    cfg = make_config(api={"port": free_port()}, gate={"min_area_px": 0, "deadline_ms": 140,
                                                        "sop": [{"name": "all-pass", "action": "pass_all"}]},
                      actuator={"kind": "modbus", "modbus": {"port": free_port()}, "retry_max_s": 0.2})
    station = Station(cfg).start()  # nothing listens on that PLC port
    assert station.wait(30)
    station.alarms.event("late_decision", 'part 3: <img src=x onerror="document.title=\'pwned\'">')
    server, thread = serve(station)
    try:
        page = new_page(browser, viewport={"width": 1280, "height": 800})
        log_in(page, f"http://127.0.0.1:{cfg.api.port}/")
        page.wait_for_function("document.querySelector('#banner').textContent.includes('NOT REJECTING')")
        assert page.text_content("#banner") == "NOT REJECTING – PLC OFFLINE"
        assert "muted" in page.get_attribute("#verdict", "class")  # the PASS is there, small, under the banner
        assert "bad" in page.get_attribute("#plc", "class")
        # an alarm's text is shown as text: no element is created from it
        page.wait_for_function("document.querySelector('#alarms').textContent.includes('onerror')")
        assert page.locator("#alarms img").count() == 0 and page.title() != "pwned"
        page.locator("#alarms li", has_text="late_decision").locator("button").click()
        page.wait_for_function("!document.querySelector('#alarms').textContent.includes('late_decision')")
        assert station.audit.entries()[-1]["action"] == "alarm_acknowledged"
        page.screenshot(path=str(SHOTS / "operator-plc-offline.png"))
    finally:
        server.should_exit = True
        thread.join(5)
        station.stop()


def test_capture_grid_confirms_all_with_one_key_and_excludes_by_touch(make_config, browser):
    from serving.drift.capture import CaptureRequest

    station = Station(make_config(api={"port": free_port()}, source={"rate_hz": 5},
                                  stability={"window": 10, "min_parts": 5}))
    station.normals.start_capture(CaptureRequest(parts=10), "eddie")
    station.start()
    assert station.wait(30)
    server, thread = serve(station)
    try:
        page = new_page(browser, viewport={"width": 1280, "height": 800}, has_touch=True)
        log_in(page, f"http://127.0.0.1:{station.cfg.api.port}/")
        page.wait_for_selector("#capture:not([hidden]) .cand img[src^='blob:']")
        assert page.is_hidden("#review")  # the capture takes the review's place until it is confirmed
        assert page.locator(".cand").count() == 10
        assert "stability" in page.text_content("#stab") and page.text_content("#stabVal").strip().isdigit()
        page.screenshot(path=str(SHOTS / "operator-capture.png"))
        flagged = page.locator(".cand.flag").count()
        first_plain = page.locator(".cand:not(.flag)").first
        first_plain.tap()  # a single tap excludes one part
        assert "out" in first_plain.get_attribute("class")
        page.keyboard.press("Enter")  # one key confirms the rest
        page.wait_for_function("document.querySelector('#cmsg').textContent.includes('confirmed')")
        disp = [r.disposition for r in station.evidence.query("capture_id IS NOT NULL", limit=100)]
        assert disp.count("normal") == 10 - 1 - flagged and disp.count("excluded") == 1 + flagged
        page.wait_for_selector("#review:not([hidden])")
    finally:
        server.should_exit = True
        thread.join(5)
        station.stop()


# ------------------------------------------------------------ why a FAIL failed, the page's indicators, data as text
PWN = 'x<img src=x onerror="document.title=\'pwned\'">'


def fail_last_frames(tmp_path, bundle_dir, test_images) -> Path:
    """The test cells, good and defect, then one more failing defect: the live part is a FAIL."""
    from serving.engine.anomaly import AnomalyEngine

    engine, frames = AnomalyEngine.load(bundle_dir), tmp_path / "frames"
    frames.mkdir()
    cells = sorted(test_images.rglob("*.png"))
    for i, p in enumerate(cells):
        (frames / f"{i:03d}_{p.name}").symlink_to(p)
    import cv2

    fail = next(p for p in cells if "defect" in p.parts
                and engine.infer(cv2.imread(str(p))[:, :, ::-1].copy()).score > engine.thresholds.image)
    (frames / f"999_{fail.name}").symlink_to(fail)
    return frames


def explained_station(make_config, frames, **sections):
    # a roomy deadline: what a FAIL shows is tested here, not timing on a shared test machine
    cfg = make_config(api={"port": free_port()}, source={"kind": "replay", "path": str(frames), "rate_hz": 10},
                      gate={"min_area_px": 0, "deadline_ms": 900}, actuator={"kind": "none", "delay_ms": 1000},
                      **sections)
    station = Station(cfg).start()
    assert station.wait(60)
    assert station.state.last.verdict == "FAIL" and station.state.last.explain is not None
    return station


def inside(page, sel, w, h):
    box = page.locator(sel).bounding_box()
    assert box and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= w + 1 and \
        box["y"] + box["height"] <= h + 1, (w, h, sel, box)
    return box


def test_a_fail_shows_heatmap_nearest_normal_and_its_normal_patches_live_and_in_review(make_config, bundle_dir,
                                                                                       test_images, tmp_path, browser):
    station = explained_station(make_config, fail_last_frames(tmp_path, bundle_dir, test_images))
    server, thread = serve(station)
    why = station.state.last.explain
    explained = {r.id for r in station.evidence.query("explain_file IS NOT NULL", limit=100)}
    try:
        SHOTS.mkdir(parents=True, exist_ok=True)
        for w, h in SIZES:
            page = new_page(browser, viewport={"width": w, "height": h}, has_touch=True)
            log_in(page, f"http://127.0.0.1:{station.cfg.api.port}/")
            for img in ("#heat", "#normal", "#patches"):
                page.wait_for_selector(f"{img}[src^='blob:']")
            assert "FAIL" in page.text_content("#verdict")
            assert why.nearest.file in page.text_content("#normalCap")
            assert all(p.normal_file in page.text_content("#patchesCap") for p in why.patches)
            # the pictures are the station's: the nearest normal and the three patch crops, side by side
            natural = page.eval_on_selector("#normal", "el => [el.naturalWidth, el.naturalHeight]")
            assert natural == list(why.picture["normal"][2:])
            natural = page.eval_on_selector("#patches", "el => [el.naturalWidth, el.naturalHeight]")
            assert natural[0] > 3 * why.picture["patch1"][2] and natural[1] == why.picture["patch1"][3]
            inside(page, "#heat", w, h)
            inside(page, "#patches", w, h)
            normal = inside(page, "#normal", w, h)
            assert normal["height"] >= (55 if h < 560 else 120), (w, h, normal)  # readable on a panel and a wall
            # review: a FAIL suspect shows its own nearest normal and patches beside its picture
            card = next((c for c in page.locator(".item").all() if int(c.get_attribute("data-id")) in explained), None)
            assert card is not None, "no explained FAIL among the review suspects"
            card.tap()
            page.wait_for_selector("#pnormal[src^='blob:']")
            page.wait_for_selector("#ppatches[src^='blob:']")
            inside(page, "#pnormal", w, h)
            inside(page, "#ppatches", w, h)
            for sel in ("#verdict", "#btnPass", "#btnFail", ".item >> nth=0"):
                inside(page, sel, w, h)
            assert page.evaluate("document.scrollingElement.scrollHeight") <= h + 1  # nothing below the fold
            page.screenshot(path=str(SHOTS / f"operator-explain-{w}x{h}.png"))
            page.close()
    finally:
        server.should_exit = True
        thread.join(5)
        station.stop()


def crafted_bundle(bundle_dir: Path, dst: Path) -> Path:
    """A signed copy of the bundle whose enrolled normals' file names are markup."""
    import json

    from helpers import edit_manifest, resign

    from serving.engine.bundle import file_entries

    shutil.copytree(bundle_dir, dst, ignore=shutil.ignore_patterns("enrollment.pt"))
    index = dst / "explain" / "normals.json"
    raw = json.loads(index.read_text())
    raw["files"] = [PWN + f"{i}.png" for i in range(len(raw["files"]))]
    index.write_text(json.dumps(raw))
    edit_manifest(dst, lambda m: m["files"].update(
        {"explain/normals.json": file_entries(dst, ["explain/normals.json"])["explain/normals.json"].model_dump()}))
    return resign(dst)


def with_state(page, change):
    """Change what /api/state answers (the real answer, then ``change``), as another station release would send."""
    def handle(route):
        response = route.fetch()
        body = response.json()
        change(body)
        route.fulfill(response=response, json=body)
    page.route("**/api/state", handle)


def test_data_is_text_never_markup_and_the_page_works_under_its_own_csp(make_config, bundle_dir, test_images, tmp_path,
                                                                      browser):
    frames = fail_last_frames(tmp_path, bundle_dir, test_images)
    station = explained_station(make_config, frames, bundle=str(crafted_bundle(bundle_dir, tmp_path / "crafted")))
    assert PWN in station.state.last.explain.nearest.file
    with pytest.raises(LineguardError):  # a crafted bundle path: refused, and its path is in the alarm's text
        station.reload_bundle(f"/nonexistent/{PWN}", "eddie")
    assert PWN in next(a.message for a in station.alarms.active() if a.name == "bundle")
    server, thread = serve(station)
    url = f"http://127.0.0.1:{station.cfg.api.port}/"
    try:
        # 1. with the CSP lifted, markup in the data WOULD run if the page ever inserted it as HTML
        page = new_page(browser, viewport={"width": 800, "height": 480})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        with_state(page, lambda s: s.update(
            demo=True, bundle_unsigned=True, bundle_signer=PWN,
            sync={"target": "s3://evidence/" + PWN, "online": False, "backlog_records": 1234,
                  "backlog_bytes": 3.5 * 2**20, "oldest_unsynced_age_s": 7200, "last_sync_at": time.time() - 7200}))
        log_in(page, url)
        page.wait_for_selector("#normal[src^='blob:']")
        page.wait_for_function("document.querySelector('#alarms').textContent.includes('onerror')")
        time.sleep(0.5)  # an injected <img src=x> would have failed to load and fired by now
        assert PWN in page.text_content("#alarms") and PWN in page.text_content("#normalCap")
        assert PWN in page.text_content("#patchesCap") and PWN in page.text_content("#signer")
        assert page.locator("img[src='x']").count() == 0 and page.title() != "pwned" and not errors
        # the indicators
        assert page.is_visible("#demo") and "DEMO PASSWORDS" in page.text_content("#demo")
        assert page.is_visible("#unsigned") and "UNSIGNED BUNDLE (allow_unsigned)" in page.text_content("#unsigned")
        assert page.text_content("#net") == "sync OFFLINE" and "warn" in page.get_attribute("#net", "class")
        assert page.text_content("#backlog") == "backlog 1234 · 3.5 MB · oldest 2.0 h"
        assert PWN in page.get_attribute("#backlog", "title")
        for sel in ("#demo", "#unsigned", "#verdict", "#btnFail", "#normal", "#net", "#logout"):  # all fit a small panel
            inside(page, sel, 800, 480)
        assert page.evaluate("document.scrollingElement.scrollHeight") <= 481
        page.screenshot(path=str(SHOTS / "operator-indicators-800x480.png"))
        page.close()

        # 2. a station that sends none of the new fields: the page still works, no banner, no error
        page = new_page(browser, viewport={"width": 800, "height": 480})
        page.on("pageerror", lambda e: errors.append(str(e)))
        gone = ("sync", "demo", "bundle_unsigned", "bundle_signer")
        with_state(page, lambda s: [s.pop(k, None) for k in gone])
        log_in(page, url)
        page.wait_for_selector("#normal[src^='blob:']")
        assert page.is_hidden("#demo") and page.is_hidden("#unsigned") and page.text_content("#signer") == ""
        assert page.text_content("#net") == "sync" and page.text_content("#backlog") == "" and not errors
        page.close()

        # 3. under the page's own content-security policy: everything shows, nothing is blocked
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        blocked = []
        page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        first = page.goto(url)
        assert "script-src 'self'" in first.headers["content-security-policy"]
        page.fill("#user", "olga")
        page.fill("#pass", "op-pass")
        page.click("button[type=submit]")
        for sel in ("#app:not([hidden])", "#heat[src^='blob:']", "#normal[src^='blob:']", "#patches[src^='blob:']",
                    ".item img[src^='blob:']", "#alarms li"):
            page.wait_for_selector(sel)
        assert "FAIL" in page.text_content("#verdict") and PWN in page.text_content("#normalCap")
        assert not blocked and not errors and page.title() != "pwned"
        context.close()
    finally:
        server.should_exit = True
        thread.join(5)
        station.stop()


def test_the_operator_script_never_writes_markup():
    """The page's only script: every piece of data goes in through textContent or DOM nodes."""
    js = (ROOT / "serving" / "api" / "static" / "operator.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setTimeout(\"", "setInterval(\""):
        assert sink not in js, sink
