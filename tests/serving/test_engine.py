"""The serving engine on a real bundle: scores, maps, dynamic batch, explanations."""

import numpy as np
import pytest

from serving.engine import AnomalyEngine
from serving.images import list_images, read_image


@pytest.fixture(scope="module")
def engine(bundle_dir):
    return AnomalyEngine.load(bundle_dir)


def test_infer_returns_score_map_matches_and_overlay(engine, test_images):
    img = read_image(list_images(test_images / "defect")[0])
    r = engine.infer(img)
    spec = engine.spec
    assert np.isfinite(r.score)
    assert r.anomaly_map.shape == (spec.height, spec.width)
    assert r.score == pytest.approx(float(r.anomaly_map.max()), rel=1e-5)
    assert r.overlay(engine.thresholds.pixel).shape == (spec.height, spec.width, 3)
    bank = np.load(engine.bundle.path("explain/bank_source.npy"))
    assert r.patch_match.min() >= 0 and r.patch_match.max() < len(bank)  # every patch names its nearest normal


def test_batch_axis_is_dynamic_and_consistent(engine, test_images):
    imgs = [read_image(p) for p in list_images(test_images / "good")[:3]]
    batch = np.stack([engine.prepare(i) for i in imgs])
    scores, maps, _ = engine.score_batch(batch)
    singles = [engine.infer(i).score for i in imgs]
    assert scores.shape == (3,) and maps.shape[0] == 3
    assert np.allclose(scores, singles, rtol=1e-4)


def test_defective_cells_score_higher_than_good_ones(engine, test_images):
    good = [engine.infer(read_image(p)).score for p in list_images(test_images / "good")]
    bad = [engine.infer(read_image(p)).score for p in list_images(test_images / "defect")]
    assert np.median(bad) > np.median(good)


def test_cpu_provider_in_use_here(engine):
    assert "CPUExecutionProvider" in engine.providers
