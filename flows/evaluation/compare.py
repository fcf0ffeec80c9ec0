"""``lineguard compare``: two bundles on the same test data, metric by metric and image by image.

>>> compare("models/bottle/v1", "models/bottle/v2", "data/bottle", "reports/compare")   # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from flows.evaluation.evaluate import evaluate
from flows.evaluation.plots import _plt

ROWS = [("image AUROC", "image_auroc"), ("pixel AUROC", "pixel_auroc"), ("threshold", "threshold"),
        ("false-reject rate", "frr"), ("escape rate", "escape_rate")]


def compare(bundle_a: str | Path, bundle_b: str | Path, data: str | Path, out: str | Path) -> dict:
    """Evaluate both; write ``compare.png`` (score scatter A vs B, and both histograms) and ``compare.json``."""
    a = evaluate(bundle_a, data, progress=False, keep=True)
    b = evaluate(bundle_b, data, progress=False, keep=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [f"{'':<20} {'A':>12} {'B':>12} {'B - A':>10}", "-" * 56]
    for name, key in ROWS + [("latency p50 (ms)", "p50"), ("latency p99 (ms)", "p99")]:
        va = a["latency_ms"][key] if key in ("p50", "p99") else a[key]
        vb = b["latency_ms"][key] if key in ("p50", "p99") else b[key]
        diff = "" if va is None or vb is None else f"{vb - va:+.4f}"
        lines.append(f"{name:<20} {fmt(va):>12} {fmt(vb):>12} {diff:>10}")
    flips = [(ra.path.name, ra.verdict, rb.verdict) for ra, rb in zip(a["_results"], b["_results"]) if ra.verdict != rb.verdict]
    lines.append(f"verdicts that differ: {len(flips)} of {len(a['_results'])}"
                 + "".join(f"\n  {n}: A {va} -> B {vb}" for n, va, vb in flips[:20]))
    plt = _plt()
    sa, sb = np.array([r.score for r in a["_results"]]), np.array([r.score for r in b["_results"]])
    labels = np.array([r.label for r in a["_results"]])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for lab, color, name in ((0, "tab:green", "good"), (1, "tab:red", "defective")):
        ax1.scatter(sa[labels == lab] / a["threshold"], sb[labels == lab] / b["threshold"], s=12, c=color, label=name)
    ax1.axhline(1, ls="--", c="k", lw=0.8)
    ax1.axvline(1, ls="--", c="k", lw=0.8)
    ax1.set(xlabel="A: score / A's threshold", ylabel="B: score / B's threshold", title="per image (1 = threshold)")
    ax1.legend(fontsize=8)
    for s, name, color in ((sa / a["threshold"], "A", "tab:blue"), (sb / b["threshold"], "B", "tab:orange")):
        ax2.hist(s, bins=40, alpha=0.5, label=name, color=color)
    ax2.axvline(1, ls="--", c="k")
    ax2.set(xlabel="score / threshold", title="all test images")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "compare.png", dpi=100)
    plt.close(fig)
    summary = {"a": str(bundle_a), "b": str(bundle_b), "flips": flips,
               **{f"{key}_{side}": r[key] for key in dict(ROWS).values() for side, r in (("a", a), ("b", b))}}
    (out / "compare.json").write_text(json.dumps(summary, indent=1))
    return {"table": "\n".join(lines), "plot": out / "compare.png", "summary": summary}
