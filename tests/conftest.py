"""Shared fixtures. Kept lean: the serving tests also run in a station-only venv without torch."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from flows.settings import quiet_environment
from helpers import ROOT, fast_params, link_subset, require_bottle, sign_test_bundle, station_config, pipeline_test_key

quiet_environment(ROOT)


@pytest.fixture(scope="session")
def small_bottle(tmp_path_factory) -> Path:
    """A real MVTec bottle subset in MVTec layout: 30 good to enroll, 6 good + 6 defects (with masks) to test."""
    src = require_bottle()
    root = tmp_path_factory.mktemp("bottle")
    link_subset(src / "train" / "good", root / "train" / "good", 30)
    link_subset(src / "test" / "good", root / "test" / "good", 6)
    link_subset(src / "test" / "broken_large", root / "test" / "broken_large", 6)
    link_subset(src / "ground_truth" / "broken_large", root / "ground_truth" / "broken_large", 6)
    return root


@pytest.fixture(scope="session")
def small_elpv(tmp_path_factory) -> Path:
    """A real ELPV subset (from the elpv-dataset package): 30 good cells to enroll, 10 good + 10 defective to test."""
    from flows.data.prepare import prepare_elpv

    return prepare_elpv(tmp_path_factory.mktemp("elpv") / "elpv", n_train=30, n_test_good=10, n_test_defect=10)


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory) -> Path:
    """A real bundle (PatchCore, ELPV subset). Reused from $LINEGUARD_TEST_BUNDLE when it holds one.

    In the station-only venv the bundle must come from the env var (no torch there to build one).
    """
    target = os.environ.get("LINEGUARD_TEST_BUNDLE")
    if target and (Path(target) / "manifest.json").is_file():
        return sign_test_bundle(Path(target))
    try:
        import torch  # noqa: F401
    except ImportError:
        pytest.skip("no torch in this venv and no bundle at $LINEGUARD_TEST_BUNDLE; run scripts/test.sh")
    from flows.anomaly.enroll import enroll
    from flows.anomaly.export import export_bundle
    from flows.data.prepare import prepare_elpv

    data = prepare_elpv(tmp_path_factory.mktemp("elpv_b") / "elpv", n_train=30, n_test_good=6, n_test_defect=6)
    out = Path(target) if target else tmp_path_factory.mktemp("bundle")
    if out.exists():
        shutil.rmtree(out)
    params = fast_params()
    enroll(data, params, out, progress=False)
    export_bundle(out, params.export)
    # keep a few test images beside it for the station-only run
    shutil.copytree(data / "test", out.parent / (out.name + "-images"), dirs_exist_ok=True)
    return out


@pytest.fixture()
def bundle_copy(bundle_dir, tmp_path) -> Path:
    """A private copy of the bundle that a test may tamper with."""
    dst = tmp_path / "bundle"
    shutil.copytree(bundle_dir, dst, ignore=shutil.ignore_patterns("enrollment.pt"))
    return dst


@pytest.fixture()
def test_images(bundle_dir) -> Path:
    """Folder of test images (good/ and defect/) stored beside the bundle."""
    return bundle_dir.parent / (bundle_dir.name + "-images")


@pytest.fixture()
def make_config(tmp_path, bundle_dir, test_images):
    """A valid replay-station config around the test bundle; sections override per test."""
    return lambda **sections: station_config(tmp_path, bundle_dir, test_images, **sections)


@pytest.fixture()
def station(make_config):
    """A station that has replayed the test images (its threads stopped at the end of the test)."""
    from serving.station.runtime import Station

    st = Station(make_config())
    st.start()
    assert st.wait(30)
    yield st
    st.stop()


@pytest.fixture(scope="session")
def detector_dir(tmp_path_factory) -> Path:
    """A real but tiny detector bundle (1 epoch on MVTec AD bottle, 160 px, reports from confidence 0.001, so
    it finds boxes anywhere). Reused from $LINEGUARD_TEST_DETECTOR; built there by the pipeline venv."""
    target = os.environ.get("LINEGUARD_TEST_DETECTOR")
    if target and (Path(target) / "manifest.json").is_file():
        return sign_test_bundle(Path(target))
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        pytest.skip("no ultralytics in this venv and no detector at $LINEGUARD_TEST_DETECTOR; run scripts/test.sh")
    import contextlib
    import io

    from flows.cli import main as lineguard

    bottle = require_bottle()
    out = Path(target) if target else tmp_path_factory.mktemp("detector") / "bundle"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the engineer's command, as documented
        rc = lineguard(["detector", "train", "--data", str(bottle), "--out", str(out), "--json", "--force",
                        "--config", str(ROOT / "products" / "bottle.yaml"), "tracking.enabled=false",
                        "detector.epochs=1", "detector.max_goods=4", "detector.synthetic_per_good=1",
                        "detector.imgsz=160", "detector.confidence=0.001", "detector.batch=8",
                        f"export.signing_key={pipeline_test_key()[0]}"])
    assert rc == 0, printed.getvalue()[-2000:]
    # what `--json` printed, kept beside the bundle for the test of its keys
    out.with_name(out.name + ".train.json").write_text(printed.getvalue().strip().splitlines()[-1])
    return out


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture()
def browser():
    """Debian's Chromium, headless, driven by Playwright, with a fresh temporary profile (the page tests)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is missing: `apt-get install chromium` (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
