"""The search index the station runs instead of the whole graph's exact search: what it finds, how it errs,
that it is verified like every bundle file, and that the station's scores stay those of the exact search."""

import json

import numpy as np
import pytest

from serving.engine import AnomalyEngine
from serving.engine.bundle import MANIFEST, load_bundle
from serving.engine.search import IvfIndex, anomaly_map, kmeans
from serving.errors import BundleError
from serving.images import list_images, read_image


def _exact(x, bank):
    d = ((x[:, None] - bank[None]) ** 2).sum(-1)
    return np.sqrt(d.min(1)), d.argmin(1)


def test_probing_every_cell_is_the_exact_search_and_fewer_cells_only_overestimate():
    rng = np.random.default_rng(1)
    bank = np.concatenate([rng.normal(c, 1.0, size=(300, 16)) for c in (-3, 0, 3)]).astype(np.float32)
    x = rng.normal(0, 2.0, size=(200, 16)).astype(np.float32)
    exact, arg = _exact(x, bank)
    full = IvfIndex.build(bank, cells=16, probe=16)
    dist, idx = full.nearest(x)
    np.testing.assert_allclose(dist, exact, atol=1e-4)
    assert (idx == arg).all()  # original bank indices, not the cell-sorted ones
    approx, idx1 = IvfIndex.build(bank, cells=16, probe=1).nearest(x)
    assert (approx >= exact - 1e-4).all() and (approx > exact + 1e-3).any()
    np.testing.assert_allclose(np.sqrt(((x - bank[idx1]) ** 2).sum(1)), approx, atol=1e-3)  # idx is what it measured
    # a bank patch itself is always found at distance 0, whatever is probed
    own, own_idx = IvfIndex.build(bank, cells=16, probe=1).nearest(bank[::37])
    assert np.allclose(own, 0, atol=1e-2) and (own_idx == np.arange(len(bank))[::37]).all()


def test_kmeans_leaves_no_cell_empty_and_the_index_round_trips(tmp_path):
    rng = np.random.default_rng(2)
    bank = np.concatenate([np.zeros((60, 4)), rng.normal(size=(4, 4)) * 50]).astype(np.float32)  # few, far outliers
    _, assign = kmeans(bank, 8)
    assert np.bincount(assign, minlength=8).min() >= 1
    index = IvfIndex.build(bank, cells=8, probe=2)
    index.save(tmp_path)
    back = IvfIndex.load(tmp_path, probe=2)
    assert not back.bank.flags.writeable  # shared by every part: read-only
    x = rng.normal(size=(20, 4)).astype(np.float32)
    for a, b in zip(index.nearest(x), back.nearest(x)):
        np.testing.assert_array_equal(a, b)


_CHANGE_IN_PLACE = """
import sys
from pathlib import Path
import numpy as np
from serving.engine.search import IvfIndex
folder = Path(sys.argv[1])
index = IvfIndex.load(folder, probe=8)
x = np.random.default_rng(3).normal(size=(20, 4)).astype(np.float32)
before = index.nearest(x)
bank = folder / "bank.npy"
size = bank.stat().st_size
with open(bank, "r+b") as fh:  # what `cp new/bank.npy active/` does: the same inode, new bytes, then the new length
    fh.seek(128)
    fh.write(np.full((size - 128) // 4, 1e6, np.float32).tobytes())
print("overwritten:", all(np.array_equal(a, b) for a, b in zip(before, index.nearest(x))), flush=True)
with open(bank, "r+b") as fh:
    fh.truncate(64)
print("truncated:", all(np.array_equal(a, b) for a, b in zip(before, index.nearest(x))), flush=True)
"""


def test_a_bank_changed_in_place_after_the_load_changes_no_score_and_kills_no_process(tmp_path):
    """The loaded bank is the verified one: a copy over the active bundle's file (new bytes in the same inode, then a
    shorter length) neither shows through (unverified distances) nor, truncated, kills the station with SIGBUS."""
    import subprocess
    import sys

    bank = np.random.default_rng(2).normal(size=(4096, 4)).astype(np.float32)  # 64 KiB: pages past a truncation
    IvfIndex.build(bank, cells=8, probe=8).save(tmp_path)
    out = subprocess.run([sys.executable, "-c", _CHANGE_IN_PLACE, str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split("\n")[:2] == ["overwritten: True", "truncated: True"], out.stdout
    assert out.returncode == 0, f"the process died ({out.returncode}): {out.stderr[-300:]}"


def test_the_map_is_upsampled_by_nearest_neighbour_then_blurred_with_reflected_borders():
    patch = np.zeros((7, 28), np.float32)
    patch[3, 14] = 1.0
    m = anomaly_map(patch, 56, 224)
    assert m.shape == (56, 224)
    assert np.unravel_index(m.argmax(), m.shape) in {(27, 115), (27, 116), (28, 115), (28, 116)}  # centred on the patch
    assert m.sum() == pytest.approx(64.0, rel=1e-3)  # an 8x8 block of ones, blurred: mass kept away from the borders
    edge = anomaly_map(np.pad(np.ones((1, 1), np.float32), ((0, 6), (0, 27))), 56, 224)
    assert edge[0, 0] == edge.max()  # reflected, not zero-padded: a corner defect keeps its peak in the corner


@pytest.fixture(scope="module")
def engines(bundle_dir):
    return AnomalyEngine.load(bundle_dir), AnomalyEngine.load(bundle_dir, backend="exact")


def test_the_station_runs_the_index_and_scores_as_the_exact_search_does(engines, test_images):
    ivf, exact = engines
    assert ivf.backend.name == "onnxruntime+ivf" and ivf.bundle.manifest.search is not None
    assert exact.backend.name == "onnxruntime"
    spec = ivf.bundle.manifest.search
    good, bad = list_images(test_images / "good"), list_images(test_images / "defect")
    pairs = [(ivf.infer(read_image(p)), exact.infer(read_image(p))) for p in [*good, *bad]]
    a = np.array([p[0].score for p in pairs])
    e = np.array([p[1].score for p in pairs])
    assert (a >= e * (1 - 1e-4)).all()  # never under the exact score: the index cannot hide a defect
    assert np.max(a / e - 1) < 0.05, (a, e)
    assert spec.max_rel_diff <= 0.02  # what export measured on its parity images, within export.ivf_rtol
    for (r, q) in pairs:  # the fingerprint (drift) is the graph's
        np.testing.assert_allclose(r.embedding, q.embedding, rtol=1e-3, atol=1e-3)
    n_good = len(good)
    assert np.median(a[n_good:]) > np.median(a[:n_good])


def test_a_tampered_index_file_is_refused_by_name(bundle_copy):
    with open(bundle_copy / "search" / "bank.npy", "r+b") as fh:
        fh.seek(-8, 2)
        fh.write(b"\x00" * 8)
    with pytest.raises(BundleError, match=r"search/bank.npy: sha256 does not match"):
        load_bundle(bundle_copy)


def test_an_index_file_outside_the_listed_files_is_refused(bundle_copy):
    raw = json.loads((bundle_copy / MANIFEST).read_text())
    raw["search"]["files"]["bank"] = "../elsewhere/bank.npy"
    (bundle_copy / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="search.bank '../elsewhere/bank.npy' is not a path inside the bundle"):
        load_bundle(bundle_copy)


def _damage_index(folder, damage: str) -> tuple[str, str]:
    """Write one inconsistency into a bundle's search/ folder; (the file it is in, what the error says)."""
    consistent = "not .* consistent with the rest of the search index"
    arrays = {name: np.load(folder / name) for name in ("order.npy", "offsets.npy", "bank.npy", "bank_sq.npy")}
    if damage == "order_not_a_permutation":
        arrays["order.npy"][0] = arrays["order.npy"][1]
        np.save(folder / "order.npy", arrays["order.npy"])
        return "order.npy", consistent
    if damage == "offsets_past_the_bank":
        arrays["offsets.npy"][-1] += 5
        np.save(folder / "offsets.npy", arrays["offsets.npy"])
        return "offsets.npy", consistent
    if damage == "an_empty_cell":  # the search would argmin over nothing on the first part probing it
        arrays["offsets.npy"][1] = 0
        np.save(folder / "offsets.npy", arrays["offsets.npy"])
        return "offsets.npy", consistent
    if damage == "bank_of_another_width":
        np.save(folder / "centroids.npy", np.zeros((4, 3), np.float32))
        return "centroids.npy", consistent
    if damage == "centroids_0d":
        np.save(folder / "centroids.npy", np.float32(1.0))
        return "centroids.npy", consistent
    if damage == "centroids_1d_offsets_empty":
        np.save(folder / "centroids.npy", np.zeros(4, np.float32))
        np.save(folder / "offsets.npy", np.zeros(0, np.int64))
        return "centroids.npy", consistent
    if damage == "bank_with_nan":
        arrays["bank.npy"][3, 5] = np.nan
        np.save(folder / "bank.npy", arrays["bank.npy"])
        return "bank.npy", consistent
    if damage == "norms_of_minus_infinity":  # every distance -inf -> sqrt(0): every part would PASS
        np.save(folder / "bank_sq.npy", np.full_like(arrays["bank_sq.npy"], -np.inf))
        return "bank_sq.npy", consistent
    if damage == "norms_not_the_banks":
        np.save(folder / "bank_sq.npy", arrays["bank_sq.npy"] * 0.5)
        return "bank_sq.npy", consistent
    if damage == "not_an_npy_file":
        (folder / "order.npy").write_bytes(b"PK\x03\x04 a zip, not an array")
        return "order.npy", "not a readable .npy array"
    if damage == "a_header_claiming_terabytes":  # numpy would try to allocate it before reading
        with open(folder / "bank_sq.npy", "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
            fh.write(b"\0" * 64)
        return "bank_sq.npy", "not a readable .npy array .*declares"
    if damage == "an_npz_archive":
        with open(folder / "order.npy", "wb") as fh:
            np.savez(fh, order=arrays["order.npy"])
        return "order.npy", "an .npz archive, not one .npy array"
    if damage == "fingerprint_with_nan":
        proj = np.load(folder / "fingerprint_proj.npy")
        proj[0, 0] = np.nan
        np.save(folder / "fingerprint_proj.npy", proj)
        return "fingerprint_proj.npy", "fingerprint arrays .* are not finite float arrays"
    raise AssertionError(damage)


@pytest.mark.parametrize("damage", ["order_not_a_permutation", "offsets_past_the_bank", "an_empty_cell",
                                    "bank_of_another_width", "centroids_0d", "centroids_1d_offsets_empty",
                                    "bank_with_nan", "norms_of_minus_infinity", "norms_not_the_banks",
                                    "not_an_npy_file", "a_header_claiming_terabytes", "an_npz_archive",
                                    "fingerprint_with_nan"])
def test_an_inconsistent_index_stops_the_load_naming_the_file_even_when_signed(bundle_copy, damage):
    """A pipeline bug (or an insider with the key) must not reach the line: the index's arrays are checked
    against each other when the bundle opens, not discovered by a part."""
    from helpers import resign

    from serving.engine.bundle import file_entries

    folder = bundle_copy / "search"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    name, says = _damage_index(folder, damage)
    changed = sorted(f"search/{p.name}" for p in folder.iterdir() if p.read_bytes() != before[p.name])
    raw = json.loads((bundle_copy / MANIFEST).read_text())
    for rel, entry in file_entries(bundle_copy, changed).items():
        raw["files"][rel] = entry.model_dump()
    (bundle_copy / MANIFEST).write_text(json.dumps(raw, indent=2))
    resign(bundle_copy)
    load_bundle(bundle_copy)  # hashes and signature agree: only the index check stands in the way
    with pytest.raises(BundleError, match=rf"search/{name}: {says}"):
        AnomalyEngine.load(bundle_copy)
    assert AnomalyEngine.load(bundle_copy, backend="exact").backend.name == "onnxruntime"  # the graph still runs


def test_an_index_of_another_width_than_the_backbone_is_refused_at_load(bundle_copy):
    """Arrays that fit each other but not the backbone's patches would fail the first part's GEMM: refused first."""
    from serving.engine.bundle import file_entries

    folder = bundle_copy / "search"
    width = np.load(folder / "bank.npy").shape[1] + 1
    rng = np.random.default_rng(5)
    IvfIndex.build(rng.normal(size=(400, width)).astype(np.float32), cells=4, probe=2).save(folder)
    np.save(folder / "fingerprint_mean.npy", np.zeros(width, np.float32))
    np.save(folder / "fingerprint_proj.npy", np.zeros((width, 4), np.float32))
    raw = json.loads((bundle_copy / MANIFEST).read_text())
    names = [f"search/{p.name}" for p in folder.iterdir()]
    raw["files"].update({k: v.model_dump() for k, v in file_entries(bundle_copy, names).items()})
    raw["search"]["cells"] = 4
    (bundle_copy / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=rf"backbone.onnx: the backbone graph gives patch features of shape .*"
                                          rf"the index holds {width}-dimensional patches"):
        AnomalyEngine.load(bundle_copy)


@pytest.mark.parametrize("edit, says", [
    (lambda s: s["files"].__setitem__("bank", "search/"), r"search.files \['search/'\] are not files listed"),
    (lambda s: s["files"].pop("order"), "the station needs exactly"),
    (lambda s: s.__setitem__("cells", s["cells"] + 1), "cells, the manifest says"),
], ids=["a_folder_for_a_file", "a_role_missing", "cells_miscounted"])
def test_a_search_section_that_does_not_match_its_files_is_refused(bundle_copy, edit, says):
    """``load_bundle`` lets other sections name a folder of listed files; the index needs each file itself."""
    raw = json.loads((bundle_copy / MANIFEST).read_text())
    edit(raw["search"])
    (bundle_copy / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=says):
        AnomalyEngine.load(bundle_copy)


def test_a_gpu_station_runs_the_whole_graph_and_a_cpu_one_the_index(bundle_dir, monkeypatch):
    """On a GPU the exact search's one large GEMM is faster than the index's many small ones: the index is for CPUs."""
    import onnxruntime as ort

    from serving.engine import anomaly

    gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers())
    assert anomaly.cpu_only("auto", engine_built=False) == (not gpu)  # this machine: CPU (and Azure) only
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert not anomaly.cpu_only("auto", engine_built=False) and not anomaly.cpu_only("onnxruntime", False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert anomaly.cpu_only("onnxruntime", engine_built=True)  # an engine, but asked for ONNX Runtime
    monkeypatch.setattr(anomaly, "tensorrt_available", lambda: True)
    assert not anomaly.cpu_only("auto", engine_built=True)  # TensorRT runs its engine of the whole graph


def test_more_probes_than_cells_is_the_exact_search(tmp_path):
    rng = np.random.default_rng(3)
    bank = rng.normal(size=(200, 6)).astype(np.float32)
    IvfIndex.build(bank, cells=4, probe=4).save(tmp_path)
    index = IvfIndex.load(tmp_path, probe=9)  # a manifest may say more than the bank was split into
    x = rng.normal(size=(15, 6)).astype(np.float32)
    np.testing.assert_allclose(index.nearest(x)[0], _exact(x, bank)[0], atol=1e-4)
