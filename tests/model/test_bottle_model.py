"""Behaviour of a trained artefact: a bottle bundle localises real defects inside their masks."""

import numpy as np
import pytest

from helpers import fast_params
from flows.anomaly.enroll import enroll
from flows.evaluation.evaluate import evaluate
from flows.anomaly.export import export_bundle

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


@pytest.fixture(scope="module")
def report(tmp_path_factory, small_bottle):
    out = tmp_path_factory.mktemp("bottle_model") / "bundle"
    params = fast_params(input_size=256)
    enroll(small_bottle, params, out, progress=False)
    export_bundle(out, params.export)
    return evaluate(out, small_bottle, progress=False, keep=True)


def test_every_defect_outscores_every_good_bottle(report):
    assert report["image_auroc"] == 1.0
    assert report["image_auroc_interval"] == [1.0, 1.0]  # no spread to measure; the report carries n beside it
    c = report["counts"]
    lo, hi = report["escape_interval"]
    assert lo <= c["defect_pass"] / report["n_defect"] <= hi and hi > 0  # 0 escapes of a few is not a 0 % promise


def test_anomaly_map_peak_lies_on_the_defect(report):
    from serving.images import read_mask
    from serving.engine.preprocess import resize

    hits = []
    for r in report["_results"]:
        if not r.label:
            continue
        mask = read_mask(r.path.parent.parent.parent / "ground_truth" / r.defect_type / f"{r.path.stem}_mask.png")
        mask = resize(mask.astype(np.uint8), *r.anomaly_map.shape, nearest=True) > 0
        # allow the blur's reach: peak within 8 px of the mask
        yy, xx = np.unravel_index(np.argmax(r.anomaly_map), r.anomaly_map.shape)
        ys, xs = np.nonzero(mask)
        hits.append(np.min(np.hypot(ys - yy, xs - xx)) <= 8)
    assert np.mean(hits) >= 0.8
