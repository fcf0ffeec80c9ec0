"""Why a FAIL failed: the region, the 3 normal patches it was compared with and the nearest normal, computed from
the real test bundle's explain files, kept (encrypted) with the FAIL's record and served by the API."""

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.alarms import Alarms
from serving.api import create_app
from serving.engine.anomaly import AnomalyEngine
from serving.engine.bundle import Bundle, load_bundle
from serving.engine.explain import Explainer
from serving.engine.explain_picture import encode_jpeg, panel
from serving.engine.preprocess import heatmap_overlay
from serving.errors import BundleError
from serving.evidence.retention import enforce_limits
from serving.evidence.store import EvidenceStore
from serving.explanation import Explanation
from serving.station.runtime import Station


def rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1].copy()


@pytest.fixture(scope="module")
def engine(bundle_dir) -> AnomalyEngine:
    return AnomalyEngine.load(bundle_dir)


def failing_defect(engine, test_images) -> tuple[Path, object]:
    """The first defect image the model scores above its image threshold, with its result."""
    for p in sorted((test_images / "defect").iterdir()):
        res = engine.infer(rgb(p))
        if res.score > engine.thresholds.image:
            return p, res
    pytest.fail(f"no defect image in {test_images} scores above the threshold")


def test_explanation_names_real_bank_patches_and_the_nearest_enrolled_normal(engine, bundle_dir, test_images):
    _, res = failing_defect(engine, test_images)
    ex = engine.explainer
    why = ex.explain(res, engine.thresholds.pixel)
    m = engine.bundle.manifest
    bank_source = np.load(bundle_dir / m.explain["bank_source"])
    files = json.loads((bundle_dir / m.explain["index"]).read_text())["files"]
    fingerprints = np.load(bundle_dir / m.explain["fingerprints"])
    h, w = res.patch_match.shape
    H, W = res.anomaly_map.shape
    assert why.grid == (h, w) and why.input == (H, W) and why.bundle_version == m.bundle_version

    # the region holds the map's maximum
    py, px = np.unravel_index(np.argmax(res.anomaly_map), res.anomaly_map.shape)
    assert why.peak == (px, py) and why.peak_value == pytest.approx(float(res.anomaly_map.max()), rel=1e-4)
    rx, ry, rw, rh = why.region
    assert rx <= px < rx + rw and ry <= py < ry + rh and why.region_cells >= 3

    # three patches, most anomalous first, each the bank patch the graph matched, traced to its enrolled image
    cells = cv2.resize(res.anomaly_map, (w, h), interpolation=cv2.INTER_AREA)
    assert [p.rank for p in why.patches] == [1, 2, 3]
    assert [p.score for p in why.patches] == sorted((p.score for p in why.patches), reverse=True)
    assert len({p.bank_index for p in why.patches}) == 3
    in_region = [(r, c) for r in range(h) for c in range(w)
                 if rx <= c * W // w < rx + rw and ry <= r * H // h < ry + rh]
    assert why.patches[0].score == pytest.approx(max(float(cells[rc]) for rc in in_region), rel=1e-3)
    for p in why.patches:
        r, c = p.cell
        assert p.bank_index == int(res.patch_match[r, c])
        img, nr, nc = (int(v) for v in bank_source[p.bank_index])
        assert (p.normal_index, p.normal_cell, p.normal_file) == (img, (nr, nc), files[img])
        assert p.box == (c * W // w, r * H // h, W // w, H // h)
        assert p.normal_box == (nc * W // w, nr * H // h, W // w, H // h)
        assert rx <= p.box[0] < rx + rw and ry <= p.box[1] < ry + rh

    # the nearest normal: the enrolled image whose fingerprint is nearest the part's
    d = np.linalg.norm(fingerprints - res.embedding, axis=1)
    assert why.nearest.how == "fingerprint" and why.nearest.index == int(np.argmin(d))
    assert why.nearest.file == files[why.nearest.index]
    assert why.nearest.distance == pytest.approx(float(d.min()), rel=1e-3)

    # the picture decodes; its panels are the part's heatmap, that normal and those three bank patches
    overlay = heatmap_overlay(res.crop, res.anomaly_map, engine.thresholds.pixel)
    picture, drawn = ex.render(overlay, why)
    decoded = cv2.imdecode(np.frombuffer(encode_jpeg(picture), np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape == picture.shape
    assert set(drawn.picture) == {"overlay", "normal", "patch1", "patch2", "patch3"}
    thumb = rgb(bundle_dir / m.explain["thumbnails"] / f"{why.nearest.index:04d}.jpg")
    _, _, nw, nh = drawn.picture["normal"]
    other = rgb(bundle_dir / m.explain["thumbnails"] / f"{(why.nearest.index + 1) % len(files):04d}.jpg")
    shown = panel(picture, drawn, "normal").astype(float)
    diff = np.abs(shown - cv2.resize(thumb, (nw, nh)).astype(float)).mean()
    assert diff < 6 < np.abs(shown - cv2.resize(other, (nw, nh)).astype(float)).mean()  # that normal, not another
    for p in drawn.patches:  # each crop is the bank patch's neighbourhood in its own normal
        src = rgb(bundle_dir / m.explain["thumbnails"] / f"{p.normal_index:04d}.jpg")
        crop = panel(picture, drawn, f"patch{p.rank}")
        bx, by, bw, bh = p.normal_box
        x0, y0 = min(max(bx - bw, 0), W - 3 * bw), min(max(by - bh, 0), H - 3 * bh)
        k = src.shape[0] / H
        want = cv2.resize(src[round(y0 * k):round((y0 + 3 * bh) * k), round(x0 * k):round((x0 + 3 * bw) * k)],
                          crop.shape[1::-1], interpolation=cv2.INTER_CUBIC)
        mask = np.ones(crop.shape[:2], bool)  # away from the outline drawn around the middle patch
        ch, cw = crop.shape[0] // 3, crop.shape[1] // 3
        mask[ch - 3:2 * ch + 3, cw - 3:2 * cw + 3] = False
        assert np.abs(crop.astype(float) - want.astype(float))[mask].mean() < 4  # outside the outline: the same pixels
    assert panel(picture, drawn, "patches").shape[1] == sum(drawn.picture[f"patch{k}"][2] for k in (1, 2, 3)) + 2 * 6


def test_without_fingerprints_or_a_bank_the_explanation_says_what_it_falls_back_to(engine, test_images):
    _, res = failing_defect(engine, test_images)
    plain = Explainer.load(engine.bundle)
    plain.fingerprints = None  # a bundle exported before fingerprints (schema 1)
    why = plain.explain(res, engine.thresholds.pixel)
    assert why.nearest.how == "best_patch" and why.nearest.index == why.patches[0].normal_index
    plain.bank_source = np.zeros((0, 3), np.int64)  # PaDiM: no memory bank
    plain.note = "padim has no memory bank: no normal patches to show, only the nearest normal"
    why = plain.explain(res, engine.thresholds.pixel)
    assert why.patches == [] and why.nearest is None and "no memory bank" in why.note
    picture, drawn = plain.render(res.crop, why)  # still one picture, its empty panels say so
    assert picture.shape[0] > 200 and drawn.picture["patch3"]


def test_a_damaged_bank_source_is_refused_with_its_file_named(bundle_dir, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle_dir, copy, ignore=shutil.ignore_patterns("enrollment.pt"))
    manifest = load_bundle(bundle_dir).manifest
    src = np.load(copy / manifest.explain["bank_source"])
    src[0, 0] = 10_000  # names an enrolled image that is not there
    np.save(copy / manifest.explain["bank_source"], src)
    with pytest.raises(BundleError, match=r"bank_source\.npy: expected rows \(image_index, row, col\)"):
        Explainer.load(Bundle(copy, manifest))


@pytest.fixture()
def last_is_fail(tmp_path, engine, test_images) -> Path:
    """Replay frames: the test cells, good and defect, then one more failing defect last (the live part)."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, p in enumerate(sorted(test_images.rglob("*.png"))):
        (frames / f"{i:03d}_{p.name}").symlink_to(p)
    fail, _ = failing_defect(engine, test_images)
    (frames / f"999_{fail.name}").symlink_to(fail)
    return frames


def test_a_fail_record_keeps_its_explanation_and_the_api_serves_its_picture(make_config, last_is_fail, capsys):
    # a roomy deadline: this test is about what a FAIL keeps, not about timing on a shared test machine
    cfg = make_config(source={"kind": "replay", "path": str(last_is_fail), "rate_hz": 10},
                      gate={"min_area_px": 0, "deadline_ms": 900}, actuator={"kind": "none", "delay_ms": 1000})
    station = Station(cfg).start()
    try:
        assert station.wait(60)
        recs = station.evidence.query("1=1", limit=100, order="id")
        fails = [r for r in recs if r.verdict == "FAIL" and not r.rule.startswith("fail_safe")]
        assert len(fails) >= 3 and recs[-1].verdict == "FAIL"
        for r in recs:
            if r in fails:
                assert r.explain is not None and r.explain_file and "explain" in r.latency_ms
                assert len(r.explain.patches) == 3 and r.explain.nearest is not None
            else:  # PASS parts are never explained: no cost, nothing stored
                assert r.explain is None and r.explain_file is None and "explain" not in r.latency_ms
        raw = (station.evidence.img_dir / fails[0].explain_file).read_bytes()
        assert not raw.startswith(b"\xff\xd8")  # encrypted at rest, like the crop and the overlay
        client = TestClient(create_app(station))
        h = {"Authorization": "Bearer " + client.post("/api/login", json={"username": "olga", "password": "op-pass"}
                                                      ).json()["token"]}
        rid = fails[0].id
        assert client.get(f"/api/explain/{rid}/picture.jpg").status_code == 401  # evidence needs a login
        got = client.get(f"/api/explain/{rid}", headers=h)
        assert got.status_code == 200 and Explanation.model_validate(got.json()) == fails[0].explain
        whole = client.get(f"/api/explain/{rid}/picture.jpg", headers=h)
        assert whole.status_code == 200 and whole.headers["content-type"] == "image/jpeg"
        picture = cv2.imdecode(np.frombuffer(whole.content, np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and picture.shape[1] > picture.shape[0] * 4  # five panels side by side
        for name in ("overlay", "normal", "patches"):
            got = client.get(f"/api/explain/{rid}/{name}.jpg", headers=h)
            part = cv2.imdecode(np.frombuffer(got.content, np.uint8), cv2.IMREAD_COLOR)
            _, _, w, hh = fails[0].explain.picture["patch1" if name == "patches" else name]
            assert part.shape[0] == hh and (part.shape[1] == w if name != "patches" else part.shape[1] > 3 * w)
        a_pass = next(r for r in recs if r.verdict == "PASS")
        assert client.get(f"/api/explain/{a_pass.id}", headers=h).status_code == 404
        assert client.get(f"/api/explain/{a_pass.id}/normal.jpg", headers=h).status_code == 404
        assert client.get("/api/explain/999999999/normal.jpg", headers=h).status_code == 404
        assert client.get(f"/api/explain/{rid}/secrets.jpg", headers=h).status_code == 422
        # the live part: the last one, a FAIL, explained in the state the page polls
        state = client.get("/api/state", headers=h).json()
        assert state["last"]["verdict"] == "FAIL" and state["last"]["explain"]["nearest"]["file"]
        live = client.get("/api/explain/live/normal.jpg", headers=h)
        assert live.status_code == 200 and int(live.headers["x-part-seq"]) == recs[-1].seq
        assert cv2.imdecode(np.frombuffer(live.content, np.uint8), cv2.IMREAD_COLOR) is not None
        ms = np.array([r.latency_ms["explain"] for r in fails])
        with capsys.disabled():
            print(f"\nexplanation per FAIL part (compute + render + JPEG, after the reject is scheduled): "
                  f"median {np.median(ms):.1f} ms, max {ms.max():.1f} ms over {len(ms)} FAILs "
                  f"(the first one reads the bundle's explain files)")
        assert np.median(ms) < 100
    finally:
        station.stop()
    # the picture survives a restart's sweep of orphan files, and goes with the images when the quota needs room
    store = EvidenceStore(cfg.evidence, Alarms(), cfg.station_id)
    try:
        assert (store.img_dir / fails[0].explain_file).exists()
        store.cfg = store.cfg.model_copy(update={"quota_mb": 1e-6})
        enforce_limits(store, now=time.time())
        assert not (store.img_dir / fails[0].explain_file).exists()
        assert store.get(fails[0].id).explain_file is None and store.get(fails[0].id).explain is not None
    finally:
        store.close()
