"""Export checks parity against torch and fails loudly; TensorRT is optional and said so."""

import json

import numpy as np
import pytest

from helpers import fast_params
from flows.anomaly import export as export_mod
from flows.anomaly.enroll import enroll
from serving.engine.bundle import load_bundle
from serving.engine.backends import tensorrt_available


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory, small_elpv):
    out = tmp_path_factory.mktemp("exp") / "bundle"
    enroll(small_elpv, fast_params(), out, progress=False)
    return out


def test_export_passes_parity_and_writes_a_verifiable_bundle(enrolled):
    m = export_mod.export_bundle(enrolled, fast_params().export)
    assert m.parity["onnx_max_rel_diff"] < 1e-3
    # every normal is enrolled and also scored unseen (k-fold): the threshold rests on all 30
    assert m.provenance.onnx_opset == 17 and m.provenance.image_count == 30 == m.thresholds.n_normals
    b = load_bundle(enrolled)
    assert b.manifest.bundle_version == m.bundle_version
    # thresholds are in the manifest, not the graph: editing them needs no re-export
    import onnx

    graph = onnx.load(str(enrolled / "model.onnx"))
    assert [o.name for o in graph.graph.output] == ["score", "anomaly_map", "patch_match", "embedding"]
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # the backbone's TensorFlow 'same' padding is in the convolutions, not in Pads that copy every activation
    for name in ("model.onnx", "bench/backbone.onnx"):
        assert not [n.name for n in onnx.load(str(enrolled / name)).graph.node if n.op_type == "Pad"], name


def test_parity_failure_is_loud_and_leaves_no_manifest(enrolled, monkeypatch):
    real_run = export_mod.OrtBackend.run

    def drifting(self, batch):
        s, m, p, e = real_run(self, batch)
        return [s * 1.01, m, p, e]  # a 1 % score drift, as a broken export would give

    monkeypatch.setattr(export_mod.OrtBackend, "run", drifting)
    with pytest.raises(export_mod.ParityError, match="parity check failed.*1.00e-02"):
        export_mod.export_bundle(enrolled, fast_params().export)
    assert not (enrolled / "manifest.json").exists()


def test_a_fingerprint_that_drifts_fails_parity_too(enrolled, monkeypatch):
    real_run = export_mod.OrtBackend.run
    monkeypatch.setattr(export_mod.OrtBackend, "run", lambda self, b: [*real_run(self, b)[:3], real_run(self, b)[3] + 0.5])
    with pytest.raises(export_mod.ParityError, match="fingerprints differ"):
        export_mod.export_bundle(enrolled, fast_params().export)


def test_a_nan_parity_difference_is_a_failure_not_a_pass():
    """NaN compares False with anything: a graph that outputs NaN must not slip through ``diff > rtol``."""
    with pytest.raises(export_mod.ParityError, match="nan"):
        export_mod.check_parity("ONNX", {"max_rel_diff": float("nan")}, 1e-3)


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT present: the engine is built instead")
def test_without_tensorrt_the_manifest_says_so_with_the_build_command(enrolled):
    m = export_mod.export_bundle(enrolled, fast_params().export)
    assert m.tensorrt.built is False
    assert "tensorrt does not import" in m.tensorrt.reason and "--fp16" in m.tensorrt.reason
    raw = json.loads((enrolled / "manifest.json").read_text())
    assert raw["tensorrt"]["precision"] == "fp16"


def test_explainability_files_map_bank_patches_to_images(enrolled):
    export_mod.export_bundle(enrolled, fast_params().export)
    bank = np.load(enrolled / "explain" / "bank_source.npy")
    index = json.loads((enrolled / "explain" / "normals.json").read_text())
    assert bank.shape[1] == 3 and bank[:, 0].max() < len(index["files"])
    assert len(list((enrolled / "explain" / "normals").glob("*.jpg"))) == len(index["files"])


def test_a_long_part_keeps_its_aspect_from_enrollment_to_the_station(tmp_path, small_elpv):
    """model.input_size WxH: a long, narrow part is not squashed; the graph, the map, the thumbnails and the station's
    crop all keep W x H, and the exported graph still passes parity."""
    from serving.engine.anomaly import AnomalyEngine
    from serving.images import read_image

    params = fast_params(input_size="128x64")
    assert params.model.input_hw == (64, 128)
    out = tmp_path / "bundle"
    enroll(small_elpv, params, out, progress=False)
    m = export_mod.export_bundle(out, params.export)
    assert (m.input.height, m.input.width) == (64, 128) and m.parity["onnx_max_rel_diff"] < 1e-3
    engine = AnomalyEngine.load(out)
    image = read_image(next((small_elpv / "test" / "good").iterdir()))
    crop, x = engine.preprocess(image)
    assert crop.shape[:2] == (64, 128) and x.shape == (3, 64, 128)
    result = engine.postprocess(engine.forward(x[None]))[0]
    assert result.anomaly_map.shape == (64, 128) and result.patch_match.shape == (8, 16)
    thumb = engine.explainer.thumbnail(0)
    assert thumb.shape[1] == 2 * thumb.shape[0]  # 128 x 64 on its long side, not squashed to a square


def test_the_search_index_ships_within_its_tolerance_or_not_at_all(enrolled, monkeypatch, caplog):
    """export.search ivf: the index and the station's path are checked against the exact scores; one that
    over-estimates past export.ivf_rtol is left out, with a warning, and the bundle runs the exact graph."""
    m = export_mod.export_bundle(enrolled, fast_params().export)
    assert m.search is not None and m.search.max_rel_diff <= fast_params().export.ivf_rtol
    assert set(m.search.files.values()) <= set(m.files) and m.search.graph in m.files
    real_run = export_mod.IvfBackend.run
    monkeypatch.setattr(export_mod.IvfBackend, "run", lambda self, b: [real_run(self, b)[0] * 1.05, *real_run(self, b)[1:]])
    with caplog.at_level("WARNING", logger="lineguard.export"):
        m = export_mod.export_bundle(enrolled, fast_params().export)
    assert m.search is None and not (enrolled / "search").exists()
    assert "past export.ivf_rtol" in caplog.text and "raise export.ivf_probe" in caplog.text
    assert load_bundle(enrolled).manifest.search is None  # no unlisted leftovers: the bundle still verifies
    small = fast_params().export.model_copy(update={"ivf_min_bank": 10**9})
    assert export_mod.export_bundle(enrolled, small).search is None
    monkeypatch.undo()
    assert export_mod.export_bundle(enrolled, fast_params().export).search is not None
