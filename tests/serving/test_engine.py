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
    batch = np.stack([engine.preprocess(i)[1] for i in imgs])
    scores, maps, _, prints = engine.forward(batch)
    singles = [engine.infer(i) for i in imgs]
    assert scores.shape == (3,) and maps.shape[0] == 3 and prints.shape[0] == 3
    np.testing.assert_allclose(prints, [s.embedding for s in singles], rtol=1e-3, atol=1e-3)
    singles = [s.score for s in singles]
    assert np.allclose(scores, singles, rtol=1e-4)


def test_defective_cells_score_higher_than_good_ones(engine, test_images):
    good = [engine.infer(read_image(p)).score for p in list_images(test_images / "good")]
    bad = [engine.infer(read_image(p)).score for p in list_images(test_images / "defect")]
    assert np.median(bad) > np.median(good)


def test_providers_follow_the_preferred_order_of_what_onnxruntime_offers(engine):
    import onnxruntime as ort

    from serving.engine.backends import PREFERRED_PROVIDERS

    expected = [p for p in PREFERRED_PROVIDERS if p in ort.get_available_providers()]
    assert engine.providers == expected and engine.providers[-1] == "CPUExecutionProvider"


def test_the_contract_steps_compose_to_infer(engine, test_images):
    img = read_image(list_images(test_images / "defect")[0])
    crop, x = engine.preprocess(img)
    assert crop.dtype == np.uint8 and crop.shape == (engine.spec.height, engine.spec.width, 3)
    assert x.dtype == np.float32 and x.shape == engine.input_shape
    (r,) = engine.postprocess(engine.forward(x[None]), [crop])
    assert r.score == pytest.approx(engine.infer(img).score, rel=1e-6)


def test_a_non_finite_score_is_refused_not_passed_on(engine):
    scores, maps, match, _ = engine.forward(np.zeros((1, *engine.input_shape), np.float32))
    with pytest.raises(FloatingPointError):
        engine.postprocess([np.array([np.nan], np.float32), maps, match])


def test_tensorrt_asked_for_without_an_engine_is_a_clear_error(bundle_dir):
    from serving.errors import BundleError

    with pytest.raises(BundleError, match="backend 'tensorrt' asked for"):
        AnomalyEngine.load(bundle_dir, backend="tensorrt")


def test_device_buffers_are_allocated_once_and_grown_only_when_needed():
    from serving.engine.backends import DeviceBuffers

    freed, counter = [], iter(range(1, 100))
    buffers = DeviceBuffers(lambda n: next(counter), freed.append)
    first = buffers.get("image", 3 * 224 * 224 * 4)
    for _ in range(50):  # the same shape, frame after frame: no new allocation
        assert buffers.get("image", 3 * 224 * 224 * 4) == first
    assert buffers.get("image", 100) == first and buffers.allocations == 1  # smaller fits in place
    grown = buffers.get("image", 2 * 3 * 224 * 224 * 4)  # a larger batch: one re-allocation, old one freed
    assert grown != first and freed == [first] and buffers.allocations == 2
    buffers.release()
    assert freed == [first, grown]


def test_the_optimised_graph_is_cached_per_machine_and_a_tampered_cache_is_not_used(bundle_dir, test_images,
                                                                                     tmp_path, monkeypatch):
    monkeypatch.setenv("LINEGUARD_ORT_CACHE", str(tmp_path / "cache"))
    first = AnomalyEngine.load(bundle_dir)
    x = first.preprocess(read_image(list_images(test_images / "defect")[0]))[1][None]
    assert not first.backend.cached and len(list((tmp_path / "cache").glob("*.onnx"))) == 1
    second = AnomalyEngine.load(bundle_dir)
    assert second.backend.cached  # graph optimisation skipped: the cold start's larger part
    np.testing.assert_allclose(second.forward(x)[0], first.forward(x)[0], rtol=1e-5)
    cached = next((tmp_path / "cache").glob("*.onnx"))
    cached.write_bytes(cached.read_bytes()[:-10] + b"0123456789")  # a disk error or an attacker
    third = AnomalyEngine.load(bundle_dir)
    assert not third.backend.cached  # its hash no longer matches: rebuilt from the verified bundle
    np.testing.assert_allclose(third.forward(x)[0], first.forward(x)[0], rtol=1e-5)
    assert AnomalyEngine.load(bundle_dir).backend.cached  # ... and cached again
    monkeypatch.setenv("LINEGUARD_ORT_CACHE", "off")
    assert not AnomalyEngine.load(bundle_dir).backend.cached


def test_the_graph_cache_keeps_only_the_most_recently_used_graphs(bundle_dir, tmp_path, monkeypatch):
    """Every deployed version adds an optimised graph; the cache must not fill a station's disk."""
    import os

    from serving.engine import backends

    cache = tmp_path / "cache"
    monkeypatch.setenv("LINEGUARD_ORT_CACHE", str(cache))
    cache.mkdir(mode=0o700)
    for i in range(backends.ORT_CACHE_KEEP + 3):  # older versions' graphs, oldest first
        for suffix in (".onnx", ".json"):
            (cache / f"old{i:02d}{suffix}").write_text("x")
            os.utime(cache / f"old{i:02d}{suffix}", (1_000 + i, 1_000 + i))
    AnomalyEngine.load(bundle_dir)  # optimises and caches this bundle's graph, then prunes
    kept = sorted(p.stem for p in cache.glob("*.onnx"))
    assert len(kept) == backends.ORT_CACHE_KEEP and not any(k.startswith("old0") and k < "old04" for k in kept)
    assert sorted(p.stem for p in cache.glob("*.json")) == kept  # hash files go with their graphs
    assert AnomalyEngine.load(bundle_dir).backend.cached  # the newest one is among those kept
