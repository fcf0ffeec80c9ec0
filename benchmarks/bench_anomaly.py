"""Anomaly engine benchmark: Lineguard vs anomalib's own pipeline, same images, same backbone.

For each data set (MVTec AD bottle from ../shared/data, ELPV mono cells from the package):
  * Lineguard: enroll (chunked coreset) + calibrate + export, then score test/ through the
    lean serving engine (ONNX Runtime, batch 1) in a separate process.
  * anomalib 2.7: ``Engine.fit`` of ``Patchcore`` on the same enrollment images and backbone
    weights, then ``Engine.export(TORCH)`` scored image by image with its ``TorchInferencer``.
Every system/data-set pair runs in its own process, so peak RSS is its own.

    .venv/bin/python benchmarks/bench_anomaly.py                 # both data sets, both systems
    .venv/bin/python benchmarks/bench_anomaly.py --skip-anomalib # Lineguard only (minutes)
    .venv/bin/python benchmarks/bench_anomaly.py --resume --reserve-anomalib  # re-time both servings, keep fits
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BOTTLE = ROOT.parent / "shared" / "data" / "mvtec_ad" / "bottle"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _emit(obj: dict) -> None:
    print("RESULT " + json.dumps(obj), flush=True)


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{args[0]} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _params(size: int, ratio: float | None = None):
    from flows.params import load_params

    ov = {"model.input_size": size, "tracking.enabled": False}
    if ratio:
        ov["model.coreset_ratio"] = ratio
    return load_params(ROOT / "params.yaml", ov)


# ---------------------------------------------------------------- Lineguard
def ours_enroll(data: str, out: str, size: int, ratio: str = "") -> None:
    from flows.anomaly.enroll import enroll
    from flows.anomaly.export import export_bundle

    params = _params(size, float(ratio) if ratio else None)
    r = enroll(data, params, out, progress=False)
    t = time.perf_counter()
    m = export_bundle(out, params.export)
    # beside the bundle, not in it: a station refuses files its manifest does not list
    Path(f"{out}.enroll_list.json").write_text(json.dumps(torch_list(out)))
    _emit({"enroll_s": r.timings["enroll_s"], "embed_s": r.timings["embed_s"], "coreset_s": r.timings["coreset_s"],
           "bank_size": r.bank_size, "n_enroll": r.n_enroll, "enroll_rss_mb": rss_mb(),
           "export_s": time.perf_counter() - t, "parity": m.parity["onnx_max_rel_diff"]})


def torch_list(bundle: str) -> list[str]:
    from flows.anomaly.enroll import load_enrollment

    return load_enrollment(bundle)["enroll_files"]


def ours_serve(bundle: str, data: str) -> None:
    from flows.evaluation.evaluate import evaluate
    from serving.lean import heavy_modules_loaded

    rep = evaluate(bundle, data, progress=False)
    _emit({"image_auroc": rep["image_auroc"], "pixel_auroc": rep["pixel_auroc"], "frr": rep["frr"],
           "escape_rate": rep["escape_rate"], "p50_ms": rep["latency_ms"]["p50"], "p99_ms": rep["latency_ms"]["p99"],
           "serve_rss_mb": rss_mb(), "heavy_loaded": heavy_modules_loaded()})


# ---------------------------------------------------------------- anomalib
def anomalib_run(data: str, work: str, size: int, enroll_list: str) -> None:
    import torch
    from anomalib.data import Folder
    from anomalib.deploy import ExportType
    from anomalib.engine import Engine
    from anomalib.models import Patchcore
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    from flows.anomaly.backbone import backbone_state_dict, load_into_feature_extractor
    from flows.data.dataset import scan_dataset

    torch.manual_seed(0)
    data, work, size = Path(data), Path(work), int(size)
    normal = work / "normal"
    normal.mkdir(parents=True, exist_ok=True)
    for name in json.loads(Path(enroll_list).read_text()):
        link = normal / name
        if not link.exists():
            os.symlink(data / "train" / "good" / name, link)
    ds = scan_dataset(data, need_train=False, need_test=True)
    types = sorted({s.defect_type for s in ds.test if s.label})
    has_masks = (data / "ground_truth").is_dir()
    dm = Folder(name="bench", root=data, normal_dir=normal, abnormal_dir=[data / "test" / t for t in types],
                normal_test_dir=data / "test" / "good",
                mask_dir=[data / "ground_truth" / t for t in types] if has_masks else None,
                train_batch_size=16, eval_batch_size=16, num_workers=1, seed=0)
    pre = PreProcessor(transform=Compose([Resize((size, size), antialias=True), Normalize([0.5] * 3, [0.5] * 3)]))
    model = Patchcore(backbone="tf_efficientnet_lite0", layers=["blocks.2", "blocks.4"], pre_trained=False,
                      coreset_sampling_ratio=0.1, pre_processor=pre)
    load_into_feature_extractor(model.model.feature_extractor.feature_extractor, backbone_state_dict("tf_efficientnet_lite0"))
    coreset = {}
    original = model.model.subsample_embedding

    def timed(*a, **k):
        t = time.perf_counter()
        original(*a, **k)
        coreset["s"] = time.perf_counter() - t

    model.model.subsample_embedding = timed
    engine = Engine(accelerator="cpu", devices=1, logger=False, default_root_dir=str(work / "engine"),
                    enable_progress_bar=False)
    t = time.perf_counter()
    engine.fit(model=model, datamodule=dm)
    fit_s = time.perf_counter() - t
    del model.model.subsample_embedding  # drop the timing wrapper: the export pickles the model
    bank = int(model.model.memory_bank.shape[0])
    fit_rss = rss_mb()
    print(f"anomalib fit {fit_s:.1f} s, coreset {coreset.get('s')}, bank {bank}", file=sys.stderr, flush=True)
    path = engine.export(model=model, export_type=ExportType.TORCH, export_root=str(work / "export"))
    (work / "fit.json").write_text(json.dumps({"enroll_s": fit_s, "coreset_s": coreset.get("s"), "bank_size": bank,
                                                "enroll_rss_mb": fit_rss, "export": str(path)}))
    _emit(json.loads((work / "fit.json").read_text()))


def anomalib_serve(data: str, work: str) -> None:
    """anomalib's TorchInferencer on its exported model, image by image, in a fresh process."""
    from anomalib.deploy import TorchInferencer

    from flows.data.dataset import scan_dataset
    from flows.evaluation.metrics import auroc
    from serving.images import read_mask
    from serving.engine.preprocess import resize

    data, work = Path(data), Path(work)
    fit = json.loads((work / "fit.json").read_text())
    os.environ["TRUST_REMOTE_CODE"] = "1"  # our own export, just written: anomalib refuses pickles otherwise
    inferencer = TorchInferencer(path=fit["export"], device="cpu")
    ds = scan_dataset(data, need_train=False, need_test=True)
    has_masks = (data / "ground_truth").is_dir()
    scores, labels, lat, preds, maps, masks = [], [], [], [], [], []
    from anomalib.data.utils import read_image as anomalib_read

    for s in ds.test:
        image = anomalib_read(s.path, as_tensor=True)  # decoding is outside the timer, as for Lineguard
        t = time.perf_counter()
        p = inferencer.predict(image)
        lat.append((time.perf_counter() - t) * 1e3)
        scores.append(float(p.pred_score.reshape(-1)[0]))
        preds.append(bool(p.pred_label.reshape(-1)[0]))
        labels.append(s.label)
        if has_masks:
            amap = p.anomaly_map.reshape(p.anomaly_map.shape[-2:]).numpy()
            maps.append(amap)
            gt = read_mask(s.mask).astype(np.uint8) if s.mask else np.zeros((2, 2), np.uint8)
            masks.append(resize(gt, *amap.shape, nearest=True) > 0)
    scores, labels, preds = np.array(scores), np.array(labels), np.array(preds)
    _emit({"image_auroc": auroc(labels, scores), "pixel_auroc": auroc(np.stack(masks), np.stack(maps)) if has_masks else None,
           "frr": float(preds[labels == 0].mean()), "escape_rate": float(1 - preds[labels == 1].mean()),
           "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)), "serve_rss_mb": rss_mb(),
           "threshold_note": "anomalib's F1-adaptive threshold, fitted on its validation split (half of test)"})


# ---------------------------------------------------------------- driver
ROWS = [("image AUROC", "image_auroc", "{:.4f}"), ("pixel AUROC", "pixel_auroc", "{:.4f}"),
        ("false-reject rate", "frr", "{:.3f}"), ("escape rate", "escape_rate", "{:.3f}"),
        ("enrollment time (s)", "enroll_s", "{:.1f}"), ("  of which coreset (s)", "coreset_s", "{:.1f}"),
        ("memory bank (patches)", "bank_size", "{:d}"), ("serving latency p50 (ms)", "p50_ms", "{:.1f}"),
        ("serving latency p99 (ms)", "p99_ms", "{:.1f}"), ("peak RSS enroll (MiB)", "enroll_rss_mb", "{:.0f}"),
        ("peak RSS serving (MiB)", "serve_rss_mb", "{:.0f}")]


def fmt(v, f):
    if v is None:
        return "n/a"
    return f.format(int(v)) if f == "{:d}" else f.format(v)


def table(results: dict) -> str:
    lines = []
    for name, res in results.items():
        ours, anom, edge = res["lineguard"], res.get("anomalib"), res.get("lineguard_edge")
        lines += [f"### {name}", "", "| metric | Lineguard | anomalib 2.7 | ratio | Lineguard, 1% coreset |",
                  "|---|---|---|---|---|"]
        for label, key, f in ROWS:
            a = anom.get(key) if anom else None
            o = ours.get(key)
            ratio = ""
            if a not in (None, 0) and o not in (None, 0) and key in ("enroll_s", "coreset_s", "p50_ms", "p99_ms",
                                                                   "enroll_rss_mb", "serve_rss_mb", "bank_size"):
                ratio = f"{a / o:.1f}x" + (" faster" if key.endswith(("_s", "_ms")) else " less")
            lines.append(f"| {label} | {fmt(o, f)} | {fmt(a, f) if anom else 'skipped'} | {ratio} | "
                         f"{fmt(edge.get(key), f) if edge else 'skipped'} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="bottle,elpv")
    ap.add_argument("--skip-anomalib", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    ap.add_argument("--resume", action="store_true", help="reuse finished runs from OUT/results.json")
    ap.add_argument("--reserve-anomalib", action="store_true",
                    help="with --resume: keep anomalib's recorded fit (~20-30 min a set) and re-time its serving only")
    ap.add_argument("--edge-ratio", type=float, default=0.01,
                    help="also run Lineguard at this coreset ratio (the edge operating point); 0 = skip")
    args = ap.parse_args()
    from tqdm.auto import tqdm

    from flows.data.prepare import prepare_elpv
    from flows.settings import quiet_environment

    quiet_environment(ROOT)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = {}
    for name in args.datasets.split(","):
        if name == "bottle":
            if not BOTTLE.is_dir():
                print(f"skipping bottle: {BOTTLE} not found (../shared/data is only in the Lineguard workplace)")
                continue
            sets["MVTec AD bottle @256"] = (BOTTLE, 256)
        elif name == "elpv":
            data = out / "data-elpv"  # not under the work folder: re-preparing must not wipe results
            sets["ELPV mono cells @224"] = (data if args.resume and data.is_dir() else prepare_elpv(data), 224)
    saved = out / "results.json"
    results = json.loads(saved.read_text()) if args.resume and saved.exists() else {}
    systems = ("lineguard", "anomalib", *(("lineguard_edge",) if args.edge_ratio else ()))
    steps = [(n, s) for n in sets for s in systems if not (s == "anomalib" and args.skip_anomalib)]
    for name, system in tqdm(steps, desc="benchmark", unit="run"):
        data, size = sets[name]
        work = out / name.split()[0].lower()
        res = results.setdefault(name, {})
        if system == "anomalib" and args.reserve_anomalib and system in res and (work / "anomalib" / "fit.json").exists():
            # its fit as recorded, its serving re-timed now, beside Lineguard's in the same run
            res[system].update(_child("anomalib_serve", str(data), str(work / "anomalib")))
            saved.write_text(json.dumps(results, indent=2))
            continue
        if system in res:
            continue
        if system in ("lineguard", "lineguard_edge"):
            bundle = work / ("bundle" if system == "lineguard" else "bundle_edge")
            ratio = str(args.edge_ratio) if system == "lineguard_edge" else ""
            res[system] = {**_child("ours_enroll", str(data), str(bundle), str(size), ratio),
                           **_child("ours_serve", str(bundle), str(data))}
        else:
            res["anomalib"] = {**_child("anomalib_run", str(data), str(work / "anomalib"), str(size),
                                        str(work / "bundle.enroll_list.json")),
                               **_child("anomalib_serve", str(data), str(work / "anomalib"))}
        saved.write_text(json.dumps(results, indent=2))  # a later failure keeps what finished
    if BOTTLE.is_dir() and "enroll-200" not in results:
        # the spec's enrollment target: 200 images at 256 px, 10 % coreset
        results["enroll-200"] = _child("ours_enroll", str(BOTTLE), str(out / "enroll200"), "256", "0.1")
    saved.write_text(json.dumps(results, indent=2))
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, batch 1, ONNX Runtime CPU\n")
    print(table({k: v for k, v in results.items() if k != "enroll-200"}))
    if "enroll-200" in results:
        e = results["enroll-200"]
        print(f"enrollment of {e['n_enroll']} bottle images @256, 10% coreset: {e['enroll_s']:.1f} s "
              f"(embed {e['embed_s']:.1f} s, coreset {e['coreset_s']:.1f} s), bank {e['bank_size']}, "
              f"peak RSS {e['enroll_rss_mb']:.0f} MiB")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("ours_enroll", "ours_serve", "anomalib_run", "anomalib_serve"):
        import warnings

        warnings.filterwarnings("ignore")
        from flows.settings import quiet_environment

        quiet_environment(ROOT)
        globals()[sys.argv[1]](*sys.argv[2:])
        sys.exit(0)
    sys.exit(main())
