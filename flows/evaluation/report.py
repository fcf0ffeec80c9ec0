"""A self-contained HTML evaluation report: what an engineer wants to see without opening MLflow.

Score histogram with the threshold and the expected false-reject rate, ROC and PR curves, a
per-defect-type table, and full-resolution overlays of every escape and every false reject with
its type and score. Pictures are embedded (base64), so the file can be mailed or archived alone.

>>> write_report(report, "reports/bottle")   # doctest: +SKIP
PosixPath('reports/bottle/index.html')
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import cv2
import numpy as np

from flows.evaluation.plots import _plt
from serving.images import read_image
from serving.engine.preprocess import crop_roi, heatmap_overlay, resize

MAX_PX = 900  # overlays are full resolution up to this size (a 900 px bottle stays 900 px)


def roc_pr(labels: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """ROC (fpr, tpr) and precision-recall curves, swept over every distinct score (defect = positive)."""
    order = np.argsort(-scores, kind="mergesort")
    y = labels[order].astype(bool)
    tp, fp = np.cumsum(y), np.cumsum(~y)
    pos, neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    tpr, fpr = np.r_[0, tp / pos], np.r_[0, fp / neg]
    precision = np.r_[1, tp / np.maximum(tp + fp, 1)]
    return {"fpr": fpr, "tpr": tpr, "recall": tpr, "precision": precision}


def _png_b64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plots(report: dict, results) -> dict[str, str]:
    plt = _plt()
    scores = np.array([r.score for r in results])
    labels = np.array([r.label for r in results])
    thr = report["threshold"]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    bins = np.linspace(min(scores.min(), thr), max(scores.max(), thr), 40)
    for lab, name, color in ((0, "good", "tab:green"), (1, "defective", "tab:red")):
        if np.any(labels == lab):
            ax.hist(scores[labels == lab], bins=bins, alpha=0.55, color=color, label=f"{name} (n={int((labels == lab).sum())})")
    exp = report.get("frr_expected", report.get("target_frr"))
    ax.axvline(thr, color="k", linestyle="--", label=f"threshold {thr:.3g} (expected FRR {exp:.1%})")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("parts")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = {"histogram": _png_b64(fig)}
    if labels.any() and (~labels.astype(bool)).any():
        c = roc_pr(labels, scores)
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.4))
        a1.plot(c["fpr"], c["tpr"])
        a1.plot([0, 1], [0, 1], ":", color="grey")
        a1.set(xlabel="false-reject rate (good parts)", ylabel="defects caught", title=f"ROC, AUROC {report['image_auroc']:.3f}")
        a2.plot(c["recall"], c["precision"])
        a2.set(xlabel="recall (defects caught)", ylabel="precision", title="precision-recall")
        fig.tight_layout()
        out["curves"] = _png_b64(fig)
    return out


def _overlay_b64(r, roi, pixel_threshold: float) -> str:
    image = crop_roi(read_image(r.path), roi)
    scale = min(1.0, MAX_PX / max(image.shape[:2]))
    if scale < 1.0:
        image = resize(image, round(image.shape[0] * scale), round(image.shape[1] * scale))
    over = heatmap_overlay(image, r.anomaly_map, pixel_threshold)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(over[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 88])
    return base64.b64encode(buf.tobytes()).decode()


def write_report(report: dict, out_dir: str | Path, roi=None) -> Path:
    """Write ``out_dir/index.html`` for an :func:`~flows.evaluation.evaluate.evaluate` report made with ``keep=True``."""
    results = report.get("_results")
    if not results:
        raise ValueError("the report needs the scored images: call evaluate(..., keep=True)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(report, results)
    esc = lambda v: html.escape(str(v))  # noqa: E731
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    misses = [r for r in results if (r.label == 1 and r.verdict == "PASS") or (r.label == 0 and r.verdict == "FAIL")]
    rows = "".join(f"<tr><td>{esc(t)}</td><td>{v['n']}</td><td>{'FRR' if t == 'good' else 'escape rate'}</td>"
                   f"<td>{fmt(v.get('frr', v.get('escape_rate')))}</td></tr>" for t, v in report["per_type"].items())
    cards = "".join(
        f"<figure><img src='data:image/jpeg;base64,{_overlay_b64(r, roi, report['pixel_threshold'])}'>"
        f"<figcaption><b>{'escape' if r.label else 'false reject'}</b> · {esc(r.defect_type)}/{esc(r.path.name)} · "
        f"score {r.score:.4g} · {esc(r.rule)}</figcaption></figure>" for r in misses)
    interval = report.get("frr_interval")
    expected = (f"{report['frr_expected']:.2%} (95 % interval {interval[0]:.2%}–{interval[1]:.2%})"
                if report.get("frr_expected") is not None and interval else f"{report['target_frr']:.2%} (target)")
    span = lambda k, f: (f" (95 % interval {f.format(report[k][0])}–{f.format(report[k][1])})"  # noqa: E731
                         if report.get(k) else "")
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Lineguard evaluation</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}figure{{display:inline-block;margin:.4rem;max-width:420px}}
figure img{{max-width:100%}}figcaption{{font-size:.85rem}}.kpi td:first-child{{font-weight:600}}</style></head><body>
<h1>Evaluation of {esc(report['bundle_version'])}</h1>
<p>data: {esc(report.get('data_dir', ''))} · {report['n_good']} good, {report['n_defect']} defective test images</p>
<table class="kpi">
<tr><td>image AUROC</td><td>{fmt(report['image_auroc'])}{span('image_auroc_interval', '{:.4f}')}</td></tr>
<tr><td>pixel AUROC</td><td>{fmt(report['pixel_auroc'])}</td></tr>
<tr><td>threshold</td><td>{report['threshold']:.4g}</td></tr>
<tr><td>expected false-reject rate</td><td>{expected}</td></tr>
<tr><td>observed false-reject rate</td><td>{fmt(report['frr'])}</td></tr>
<tr><td>escape rate</td><td>{fmt(report['escape_rate'])}{span('escape_interval', '{:.1%}')}</td></tr>
<tr><td>serving latency p50 / p99</td><td>{report['latency_ms']['p50']:.1f} / {report['latency_ms']['p99']:.1f} ms</td></tr>
</table>
<h2>Scores</h2><img src="data:image/png;base64,{plots['histogram']}">
{f'<h2>ROC and precision-recall</h2><img src="data:image/png;base64,{plots["curves"]}">' if 'curves' in plots else ''}
<h2>By defect type</h2><table><tr><th>type</th><th>n</th><th>measure</th><th>value</th></tr>{rows}</table>
<h2>Escapes and false rejects ({len(misses)})</h2>{cards or '<p>none</p>'}
</body></html>"""
    path = out / "index.html"
    path.write_text(page)
    return path
