"""What the model settings are worth on every set we have: input size, feature layers, backbone (EfficientNet-Lite0
vs Lite2) and coreset ratio, each enrolled the way `lineguard enroll` does it (k-fold unseen scores, conformal
threshold at the default 1 % FRR), then scored on the test set.

Printed per setting and set: image AUROC, pixel AUROC (where masks exist), FRR and escape rate at the calibrated
threshold, bank size, the nearest-neighbour search's work per image (patches x bank x dims, in multiply-adds),
and the enrollment time; then the mean over the sets, by which the defaults are chosen (not by the best single set).

The scores come from the same torch scorer enrollment calibrates with (the exported graph reproduces it within
the export's parity bound); latency for the settings worth keeping is measured by ``lineguard-station bench``.

    .venv/bin/python benchmarks/bench_sweep.py                       # ~30 min, every setting on all three sets
    .venv/bin/python benchmarks/bench_sweep.py --settings base,lite2 --sets elpv-mono

``elpv-mono-all`` and ``elpv-poly-all`` judge the same enrollment (the same 200 train cells) on every cell it did not
enroll (701 mono, 1,122 poly instead of 200): each AUROC gets DeLong's 95 % interval and, against ``base`` on the
same cells, the paired difference with its interval, which says whether a setting ranks the parts better or the
draw of test cells favoured it.

    .venv/bin/python benchmarks/bench_sweep.py --sets elpv-mono-all,elpv-poly-all --settings base,lite2,"size 256"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: setting name -> parameter overrides over params.yaml (and the product file)
SETTINGS = {
    "base": {},
    "size 192": {"model.input_size": 192},
    "size 256": {"model.input_size": 256},
    # Lite0's feature stages are blocks.0/1/2/4/6 (stride 2/4/8/16/32); the default is blocks.2 + blocks.4
    "layers 2+4+6": {"model.layers": ["blocks.2", "blocks.4", "blocks.6"]},
    "layers 4+6": {"model.layers": ["blocks.4", "blocks.6"]},
    # blocks.1 (stride 4) puts the patch grid at 56x56: 4x the patches, so a quarter of the coreset ratio keeps the
    # bank's size (bottle's product file sets 0.02, the default is 0.1)
    "layers 1+2+4 (bank kept)": {"model.layers": ["blocks.1", "blocks.2", "blocks.4"], "model.coreset_ratio": 0.025},
    "layers 1+2+4 (bottle bank kept)": {"model.layers": ["blocks.1", "blocks.2", "blocks.4"],
                                        "model.coreset_ratio": 0.005},
    "layers 1+2+4 (bottle bank x2)": {"model.layers": ["blocks.1", "blocks.2", "blocks.4"], "model.coreset_ratio": 0.01},
    "lite2": {"model.backbone": "tf_efficientnet_lite2"},
    "coreset 0.05": {"model.coreset_ratio": 0.05},
    "coreset 0.02": {"model.coreset_ratio": 0.02},
    "coreset 0.01": {"model.coreset_ratio": 0.01},
    "coreset 0.005": {"model.coreset_ratio": 0.005},
    # bottle's 900x900 frames: a centred 896x896 ROI makes the shrink to 224 an exact 4x (OpenCV's fast area path)
    "roi 896 + coreset 0.01": {"model.roi": "2,2,896,896", "model.coreset_ratio": 0.01},
    # for the long part (elpv-string, 1200x300): squashed to 224x224 above, aspect kept here at the same pixel
    # count, and at 4x the pixels (= four 224-px tiles, one per cell, in one pass)
    "aspect kept 448x112": {"model.input_size": "448x112"},
    "aspect kept 896x224": {"model.input_size": "896x224"},
    # the other algorithm: one Gaussian per patch position (suits aligned parts such as ELPV's cells), d of the
    # layers' channels kept at random (anomalib's PaDiM)
    "padim": {"model.algorithm": "padim"},
    "padim d=150": {"model.algorithm": "padim", "model.padim_features": 150},
}
#: settings that only make sense on some sets
ONLY_ON = {"aspect kept 448x112": {"elpv-string"}, "aspect kept 896x224": {"elpv-string"},
           "layers 1+2+4 (bank kept)": {"elpv-mono", "elpv-poly", "elpv-mono-all", "elpv-poly-all"},
           "layers 1+2+4 (bottle bank kept)": {"bottle"},
           "layers 1+2+4 (bottle bank x2)": {"bottle"}, "coreset 0.01": {"bottle"}, "coreset 0.005": {"bottle"},
           "roi 896 + coreset 0.01": {"bottle"}}


def cell_strings(cells: Path, out: Path, n_train: int = 200, n_good: int = 100, n_defect: int = 100, per: int = 4,
                 seed: int = 0) -> Path:
    """A long, narrow part made of real cells: ``per`` ELPV cells side by side (1200x300 for four). Good strings are
    good cells only; a defective string has one defective test cell at a random place among good test cells.
    Train strings come from the train cells, test strings from the test cells, so no cell is seen twice."""
    import cv2
    import numpy as np

    if (out / "SOURCE.txt").exists():
        return out
    rng = np.random.default_rng(seed)
    pool = {k: sorted((cells / k).glob("*.png")) for k in ("train/good", "test/good", "test/defect")}

    def write(folder: str, n: int, defect: bool) -> None:
        (out / folder).mkdir(parents=True, exist_ok=True)
        goods = pool["train/good" if folder.startswith("train") else "test/good"]
        for i in range(n):
            picks = [goods[j] for j in rng.choice(len(goods), per, replace=False)]
            if defect:
                picks[rng.integers(per)] = pool["test/defect"][i % len(pool["test/defect"])]
            strip = np.concatenate([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in picks], axis=1)
            cv2.imwrite(str(out / folder / f"string{i:04d}.png"), strip)

    write("train/good", n_train, False)
    write("test/good", n_good, False)
    write("test/defect", n_defect, True)
    (out / "SOURCE.txt").write_text(f"{per} ELPV mono cells side by side, from {cells} (CC BY-NC-SA); "
                                    "see benchmarks/bench_sweep.py\n")
    return out


def data_sets(out: Path) -> dict[str, tuple[Path, Path | None]]:
    """name -> (data folder in MVTec AD layout, product file): bottle from ../shared, ELPV mono and poly prepared,
    and the long part made of four mono cells."""
    from flows.data.prepare import prepare_elpv
    from flows.params import load_params

    sets: dict[str, tuple[Path, Path | None]] = {}
    bottle = ROOT.parent / "shared" / "data" / "mvtec_ad" / "bottle"
    if bottle.is_dir():
        sets["bottle"] = (bottle, ROOT / "products" / "bottle.yaml")
    e = load_params(ROOT / "params.yaml", {}).data.elpv
    for cell in ("mono", "poly"):
        sets[f"elpv-{cell}"] = (prepare_elpv(out / f"data-{cell}", n_train=e.n_train, n_test_good=e.n_test_good,
                                             n_test_defect=e.n_test_defect, cell_type=cell, seed=e.seed), None)
    for cell in ("mono", "poly"):
        sets[f"elpv-{cell}-all"] = (prepare_elpv(out / f"data-{cell}-all", n_train=e.n_train, n_test_good=None,
                                                 n_test_defect=None, cell_type=cell, seed=e.seed), None)
    sets["elpv-string"] = (cell_strings(sets["elpv-mono"][0], out / "data-string"), None)
    return sets


def one(data: Path, params, out: Path) -> dict:
    """Enroll as `lineguard enroll` does, score the test set with the enrolled model; the figures of one row."""
    import numpy as np
    import torch

    from flows.anomaly.enroll import enroll, load_enrollment, restore_model
    from flows.anomaly.model import AnomalyScorer, score_batches
    from flows.data.dataset import load_tensors, scan_dataset
    from flows.evaluation.evaluate import metrics_at
    from flows.evaluation.metrics import auroc
    from serving.engine.preprocess import InputSpec, Roi, crop_roi, resize
    from serving.images import read_mask

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    r = enroll(data, params, out, progress=False)
    enroll_s = time.perf_counter() - t0
    model = restore_model(load_enrollment(out))
    mp = params.model
    spec, roi = InputSpec(height=mp.input_hw[0], width=mp.input_hw[1]), Roi.parse(mp.roi)
    ds = scan_dataset(data, need_test=True)
    x, _, _ = load_tensors([s.path for s in ds.test], spec, roi, desc="test")
    scores, maps = score_batches(AnomalyScorer(model), torch.from_numpy(x))
    scores, maps = scores.numpy(), maps.numpy()
    labels = np.array([s.label for s in ds.test])
    pixel = None
    if any(s.mask for s in ds.test):
        masks = []
        for s in ds.test:
            m = np.zeros(maps.shape[1:], bool)
            if s.label and s.mask is not None:
                raw = read_mask(s.mask).astype(np.uint8)
                m = resize(crop_roi(raw, roi) if roi else raw, *maps.shape[1:], nearest=True) > 0
            masks.append(m)
        pixel = auroc(np.stack(masks), maps)
    rates = metrics_at(scores, labels, r.thresholds.image)
    patches = int(np.prod(model.feature_extractor(torch.zeros(1, 3, *mp.input_hw))[mp.layers[0]].shape[-2:]))
    if mp.algorithm == "padim":  # no bank: each patch's Mahalanobis distance to its own position's Gaussian
        bank, dims = patches, int(model.gaussian.mean.shape[0])
        mmac = patches * dims * dims / 1e6
    else:
        bank, dims = (int(n) for n in model.memory_bank.shape)
        mmac = patches * bank * dims / 1e6
    return {"image_auroc": auroc(labels, scores), "pixel_auroc": pixel, "frr": rates["frr"],
            "escape_rate": rates["escape_rate"], "bank": bank, "dims": dims, "search_mmac": mmac, "enroll_s": enroll_s,
            "files": [s.path.name for s in ds.test], "labels": labels.tolist(), "scores": scores.tolist()}


def paired_table(rows: list[dict], sets: list[str]) -> str:
    """Every-cell sets: each setting's AUROC with DeLong's interval, and its paired difference from ``base``."""
    from flows.evaluation.metrics import auroc_difference_interval, auroc_interval

    lines = ["| setting | " + " | ".join(f"{s}: image AUROC (95 %), vs base (95 %), escape" for s in sets)
             + " | mean difference vs base |", "|---|" + "---|" * (len(sets) + 1)]
    base = {r["set"]: r for r in rows if r["setting"] == "base" and "scores" in r}
    for name in dict.fromkeys(r["setting"] for r in rows if r["set"] in sets):
        mine = {r["set"]: r for r in rows if r["setting"] == name and r["set"] in sets and "scores" in r}
        cells, diffs = [], []
        for s in sets:
            r = mine.get(s)
            if r is None:
                cells.append("–")
                continue
            lo, hi = auroc_interval(r["labels"], r["scores"])
            text = f"{r['image_auroc']:.4f} ({lo:.3f}–{hi:.3f})"
            b = base.get(s)
            if b is not None and name != "base" and b["files"] == r["files"]:
                d, dlo, dhi = auroc_difference_interval(r["labels"], r["scores"], b["scores"])
                diffs.append(d)
                text += f", {d:+.4f} ({dlo:+.3f} to {dhi:+.3f}){' *' if dlo > 0 or dhi < 0 else ''}"
            cells.append(text + f", {r['escape_rate']:.0%}")
        mean = f"{sum(diffs) / len(diffs):+.4f}" if diffs else "–"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines) + "\n\n* the paired interval excludes 0"


def table(rows: list[dict], sets: list[str]) -> str:
    """The markdown table: one line per setting, each set's figures, then the mean over the sets."""
    lines = ["| setting | " + " | ".join(f"{s} image / pixel AUROC, escape" for s in sets)
             + " | mean image AUROC | mean escape | search (M MAC / image, mean) | enroll (s, mean) |",
             "|---|" + "---|" * (len(sets) + 4)]
    for name in dict.fromkeys(r["setting"] for r in rows if r["set"] in sets):
        mine = {r["set"]: r for r in rows if r["setting"] == name and r["set"] in sets}
        cells = []
        for s in sets:
            r = mine.get(s)
            if r is None:
                cells.append("–")
                continue
            pix = "" if r["pixel_auroc"] is None else f" / {r['pixel_auroc']:.4f}"
            cells.append(f"{r['image_auroc']:.4f}{pix}, {r['escape_rate']:.0%}")
        got = list(mine.values())
        mean = lambda k: sum(r[k] for r in got) / len(got)  # noqa: E731
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean('image_auroc'):.4f} | {mean('escape_rate'):.1%} | "
                     f"{mean('search_mmac'):,.0f} | {mean('enroll_s'):.0f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, from: {', '.join(SETTINGS)}")
    ap.add_argument("--sets", default="bottle,elpv-mono,elpv-poly,elpv-string")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "sweep"))
    args = ap.parse_args()
    from flows.params import load_params
    from flows.progress import progress
    from flows.settings import quiet_environment

    quiet_environment(ROOT)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [s.strip() for s in args.settings.split(",")]
    unknown = [s for s in names if s not in SETTINGS]
    if unknown:
        ap.error(f"--settings: unknown {unknown}; choose from {list(SETTINGS)}")
    sets = {k: v for k, v in data_sets(out).items() if k in args.sets.split(",")}
    results = out / "results.jsonl"
    done = {(r["setting"], r["set"]) for r in map(json.loads, results.read_text().splitlines())} if results.exists() else set()
    todo = [(n, s) for n in names for s in sets if (n, s) not in done and s in ONLY_ON.get(n, {s})]
    for name, set_name in progress(todo, desc="sweep", unit="run"):
        data, product = sets[set_name]
        params = load_params(ROOT / "params.yaml", {"tracking.enabled": False, **SETTINGS[name]}, product)
        try:
            row = {"setting": name, "set": set_name, **one(data, params, out / "work")}
        except Exception as exc:  # one setting that cannot run must not lose the others' figures
            print(f"{name} on {set_name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            continue
        print(json.dumps({k: v for k, v in row.items() if k not in ("files", "labels", "scores")}), flush=True)
        with results.open("a") as f:  # resumable: a long sweep interrupted keeps what it measured
            f.write(json.dumps(row) + "\n")
    rows = [r for r in map(json.loads, results.read_text().splitlines()) if r["setting"] in names and r["set"] in sets]
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}\n")
    every = [s for s in sets if s.endswith("-all")]
    main_sets = [s for s in sets if s != "elpv-string" and s not in every]  # the defaults are chosen on these
    for group in (main_sets, [s for s in sets if s == "elpv-string"]):
        if group:
            print(table(rows, group) + "\n")
    if every:
        print(paired_table(rows, every) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
