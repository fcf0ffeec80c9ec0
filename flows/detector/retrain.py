"""Retrain the detector when the labels have grown: the check, the dataset, the training, the bookkeeping.

A class is due when it has ``labels.min_per_class`` labeled examples that the last detector was not
trained on. Then the YOLO dataset is rebuilt from the whole label store (a DVC output under data/),
a detector trained and registered, and the per-class counts it was trained on recorded, so the next
check counts from there. Otherwise nothing is trained and the result says, per class, why not.

>>> retrain_if_due("data/labels", "models/bottle/detector", params)   # doctest: +SKIP
{'retrained': False, 'why': {'crack': '12 new example(s), 20 needed'}, ...}
"""

from __future__ import annotations

import time
from pathlib import Path

from flows.params import Params


def retrain_if_due(store_dir: str | Path, out_root: str | Path, params: Params, *, goods: str | Path | None = None,
                   force: bool = False) -> dict:
    """Train a new detector version under ``out_root`` if any class is due (or ``force``); say what happened."""
    from flows.detector.dataset import build
    from flows.detector.train import train_detector
    from flows.labels import studio
    from serving.images import list_images

    store = studio.LabelStore(store_dir)
    classes = params.labels.classes
    s = studio.status(store, classes, params.labels.min_per_class)
    if not s["retrain_due"] and not force:
        return {"retrained": False, "why": {c: v["why"] for c, v in s["classes"].items()}, "status": s}
    d, lp = params.detector, params.labels
    good = list_images(goods) if goods else []
    data = build(studio.labeled_images(store), store.dataset_dir, classes=classes, goods=good[: d.max_goods],
                 val_fraction=lp.val_fraction, seed=lp.seed, synthetic_per_good=d.synthetic_per_good if good else 0,
                 real_repeat=d.real_repeat, rotate=d.rotate)
    out = Path(out_root) / time.strftime("v%Y%m%dT%H%M%SZ", time.gmtime())
    have = studio.counts(store)
    result = train_detector(data.root, out, params, trained_on={"counts": have, "parts": sorted(
        a["ext_id"] for a in store.annotations())})
    store.state["trained_on"] = have
    store.state["last_detector"] = {"bundle": str(out), "version": result.bundle_version, "map50": result.map50}
    store.save()
    return {"retrained": True, "due": s["retrain_due"], "bundle": str(out), **result.summary()}
