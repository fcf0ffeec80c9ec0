"""Setup mode in a real headless Chromium (Debian's, driven by Playwright) against a station replaying a looped
folder and rejecting through the project's PLC simulator: live view with focus and exposure, an ROI drawn with the
mouse and saved into the config file, a baseline captured as PNGs, a signal test that waits for a FAIL and its
pulse, a checklist that survives a reload. Browser and station are started as in test_operator_page.py."""

import json
import time
from pathlib import Path

import pytest
import yaml

from browser import SHOTS, new_page, serve
from browser import log_in as shared_log_in
from serving.config import load_config, read_yaml
from serving.engine.preprocess import Roi
from serving.images import read_image
from serving.station.runtime import Station
from services import events, free_port, plc_sim

pytestmark = [pytest.mark.slow, pytest.mark.services]
ROI_COMMENT = "# x,y,w,h of the camera frame (kept by setup mode)"


def log_in(page, url, user="eddie", pw="eng-pass"):
    shared_log_in(page, url, user, pw)


def config_file(tmp: Path, cfg) -> Path:
    """The station's config as a YAML file with comments, as an engineer keeps it (setup mode edits this file)."""
    body = yaml.safe_dump(cfg.model_dump(mode="json", exclude_unset=True), sort_keys=False)
    first, rest = body.split("\n", 1)
    path = tmp / "station.yaml"
    path.write_text(f"# station under setup\n{first}\nroi: null   {ROI_COMMENT}\n{rest}")
    return path


@pytest.fixture()
def line(tmp_path, make_config):
    """A looping replay (good and defective cells) rejecting through the PLC simulator, started from a config file."""
    with plc_sim(tmp_path) as (port, edges):
        # timing as station.example.yaml's, with a start tolerance for a 2-core machine that also runs Chromium
        cfg = make_config(api={"port": free_port()}, source={"rate_hz": 5, "loop": True}, gate={"deadline_ms": 250},
                          actuator={"kind": "modbus", "delay_ms": 300, "pulse_ms": 40, "start_tolerance_ms": 20,
                                    "modbus": {"port": port}})
        path = config_file(tmp_path, cfg)
        station = Station(load_config(path)).start()
        server, thread = serve(station)
        try:
            yield station, f"http://127.0.0.1:{cfg.api.port}/", path, edges
        finally:
            server.should_exit = True
            thread.join(5)
            station.stop()


def test_setup_mode_walkthrough_on_a_replay(line, browser):
    station, url, path, edges = line
    before = read_yaml(path)
    page = new_page(browser, viewport={"width": 1280, "height": 900}, has_touch=True)
    log_in(page, url + "setup")

    # 1. live view: the latest frame, a focus figure and an exposure histogram from the station's frame
    page.wait_for_selector("#frame[src^='blob:']")
    page.wait_for_function("document.querySelector('#focus').textContent !== '–'")
    assert float(page.text_content("#focus")) > 0
    assert page.text_content("#expo") in ("OK", "dark", "bright", "clipped dark", "clipped bright")
    assert "300×300 px" in page.text_content("#frameInfo")
    bars = page.evaluate("(() => { const c = document.querySelector('#hist'); const d = c.getContext('2d')"
                         ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 3; i < d.length; i += 4)"
                         " n += d[i] > 0; return n; })()")
    assert bars > 500  # the histogram is drawn

    # 2. ROI: a drag on the live image, saved into the config file (comment and every other key kept), audited
    box = page.locator("#roiCanvas").bounding_box()
    page.mouse.move(box["x"] + 0.1 * box["width"], box["y"] + 0.1 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.9 * box["width"], box["y"] + 0.85 * box["height"], steps=8)
    page.mouse.up()
    drawn = [int(v) for v in page.text_content("#roiDrawn").split(",")]
    assert drawn == pytest.approx([30, 30, 240, 225], abs=3)  # frame pixels, whatever the size on screen
    page.click("#roiSave")
    page.wait_for_function("document.querySelector('#roiMsg').textContent.startsWith('saved')")
    roi = ",".join(map(str, drawn))
    assert f'roi: "{roi}"   {ROI_COMMENT}' in path.read_text().splitlines()
    assert read_yaml(path) == {**before, "roi": roi}
    assert load_config(path).roi == roi  # the station starts with it next time
    assert station.cfg.roi == roi and station.engine.roi == Roi.parse(roi)  # and uses it now
    entry = [e for e in station.audit.entries() if e["action"] == "setup_roi_saved"][-1]
    assert entry["user"] == "eddie" and entry["details"]["after"] == roi and entry["details"]["before"] is None
    assert entry["details"]["config"] == str(path.resolve())
    page.wait_for_function(f"document.querySelector('#roiNow').textContent === '{roi}'")
    seq = station.state.last.seq
    deadline = time.monotonic() + 10
    while station.state.last.seq <= seq + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert station.state.last_view.roi == Roi.parse(roi)  # parts after the save are cropped with it
    page.wait_for_function("document.querySelector('#frameInfo').textContent.endsWith('figures of the ROI')")

    # 3. baseline: the next frames as PNGs in the layout `lineguard enroll --data` reads
    page.fill("#baseName", "first-shift")
    page.fill("#baseCount", "5")
    page.click("#baseStart")
    page.wait_for_function("document.querySelector('#baseInfo').textContent.startsWith('5 of 5')", timeout=20_000)
    root = path.parent / "baselines" / "first-shift"
    pngs = sorted((root / "train" / "good").glob("*.png"))
    assert len(pngs) == 5 and all(read_image(p).shape == (300, 300, 3) for p in pngs)  # whole frames
    from flows.data.dataset import scan_dataset

    assert len(scan_dataset(root, min_train=5).train) == 5  # what `lineguard enroll` checks first
    assert f"--data {root}" in page.text_content("#enrollCmd") and f"--roi {roi}" in page.text_content("#enrollCmd")
    assert json.loads((root / "baseline.json").read_text())["saved"] == 5

    # 5. signal test: green once a part FAILs after the start and the PLC got that part's reject pulse
    t_start = time.monotonic_ns()
    page.click("#sigStart")
    page.wait_for_selector("#cardSignal.pass", timeout=60_000)
    assert page.get_attribute("#sigFail", "class") == "ok" and page.get_attribute("#sigPulse", "class") == "ok"
    passed = [e for e in station.audit.entries() if e["action"] == "setup_signal_test_passed"][-1]["details"]
    assert passed["pulse_seq"] == passed["fail_seq"]
    rec = station.evidence.query("boot_id=? AND seq=?", (station.boot_id, passed["fail_seq"]), limit=1)[0]
    assert rec.verdict == "FAIL" and not rec.rule.startswith("fail_safe")
    on = [e["t_ns"] for e in events(edges, "coil", 0) if e["values"][0]]
    assert any(t > t_start for t in on)  # the simulated PLC saw the reject coil go on after the test started

    # checklist: ticked with a note, kept across a reload, audited
    page.check("#chk-camera")
    page.wait_for_function("document.querySelector('#chk-camera').parentElement.textContent.includes('ticked by eddie')")
    page.fill("#note-roi", "whole cell, 10 px margin")
    page.check("#chk-roi")
    page.wait_for_function("document.querySelector('#chk-roi').parentElement.textContent.includes('ticked by eddie')")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "setup-1280x900.png"), full_page=True)
    page.reload()
    page.wait_for_selector("#chk-camera")
    assert page.is_checked("#chk-camera") and page.is_checked("#chk-roi") and not page.is_checked("#chk-training")
    assert page.input_value("#note-roi") == "whole cell, 10 px margin"
    stored = json.loads((path.parent / "setup-checklist.json").read_text())["items"]
    assert stored["roi"]["done"] and stored["roi"]["by"] == "eddie" and stored["roi"]["note"] == "whole cell, 10 px margin"
    ticks = [e["details"]["item"] for e in station.audit.entries() if e["action"] == "setup_checklist"]
    assert ticks == ["camera", "roi"]
    assert station.audit.verify().ok  # the keyed chain holds every setup entry


def test_the_setup_page_runs_under_the_content_security_policy_and_draws_by_touch(line, browser):
    _, url, _, _ = line
    page = browser.new_context(viewport={"width": 800, "height": 1000}, has_touch=True).new_page()  # policy in force
    refused = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    log_in(page, url + "setup")
    page.wait_for_selector("#frame[src^='blob:']")
    page.wait_for_selector("#chk-training")
    assert refused == []
    assert page.text_content("#who") == "eddie (engineer)"
    box = page.locator("#roiCanvas").bounding_box()
    x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
    cdp = page.context.new_cdp_session(page)  # a finger drag on a touch panel
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0 + 0.2 * w, "y": y0 + 0.3 * h}]})
    for k in range(1, 6):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [
            {"x": x0 + (0.2 + 0.14 * k) * w, "y": y0 + (0.3 + 0.1 * k) * h}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    page.wait_for_selector("#roiSave:not([disabled])")
    assert [int(v) for v in page.text_content("#roiDrawn").split(",")] == pytest.approx([60, 90, 210, 150], abs=3)


def test_an_operator_sees_setup_mode_but_cannot_change_it(line, browser):
    _, url, path, _ = line
    text = path.read_text()
    page = new_page(browser, viewport={"width": 1280, "height": 800})
    log_in(page, url + "setup", "olga", "op-pass")
    page.wait_for_selector("#readonly:not([hidden])")
    page.wait_for_selector("#chk-camera")
    assert page.is_disabled("#chk-camera") and page.is_disabled("#sigStart") and page.is_disabled("#baseStart")
    assert path.read_text() == text
