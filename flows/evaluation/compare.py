"""``lineguard compare``: two bundles on the same test data, metric by metric and image by image, and whether
the difference is more than the draw of test images: the paired AUROC difference with DeLong's interval, and
exact McNemar tests on the parts whose verdicts differ.

>>> compare("models/bottle/v1", "models/bottle/v2", "data/bottle", "reports/compare")   # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from flows.evaluation.evaluate import evaluate
from flows.evaluation.metrics import auroc_difference_interval
from flows.evaluation.plots import _plt

ROWS = [("image AUROC", "image_auroc"), ("pixel AUROC", "pixel_auroc"), ("threshold", "threshold"),
        ("false-reject rate", "frr"), ("escape rate", "escape_rate")]


def _mcnemar(only_b: int, only_a: int) -> float:
    """Exact McNemar p-value: of the parts exactly one bundle got right, is the split further from even than chance?"""
    if not only_a + only_b:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(only_b, only_a + only_b, 0.5).pvalue)


def paired_evidence(labels, scores_a, scores_b, failed_a, failed_b) -> dict:
    """Whether B beats A on these images, beyond chance: the AUROC difference B - A with DeLong's paired 95 %
    interval, and per class the parts only one of them judged right, with the exact McNemar p-value."""
    y, fa, fb = (np.asarray(v, bool) for v in (labels, failed_a, failed_b))
    out = {"auroc_difference": None, "defects": None, "goods": None}
    d = auroc_difference_interval(y, scores_b, scores_a)
    if d is not None:
        out["auroc_difference"] = list(d)
    for key, sel, right_a, right_b in (("defects", y, fa, fb), ("goods", ~y, ~fa, ~fb)):
        if sel.any():
            only_b, only_a = int((sel & right_b & ~right_a).sum()), int((sel & right_a & ~right_b).sum())
            out[key] = {"only_b_right": only_b, "only_a_right": only_a, "mcnemar_p": _mcnemar(only_b, only_a)}
    return out


def evidence_lines(ev: dict, n: int) -> list[str]:
    """:func:`paired_evidence` for a person."""
    lines = []
    if ev["auroc_difference"] is not None:
        d, lo, hi = ev["auroc_difference"]
        verdict = ("B ranks these parts better" if lo > 0 else "A ranks these parts better" if hi < 0
                   else "within chance: neither ranks them better on this data")
        lines.append(f"image AUROC B - A {d:+.4f} (95 % {lo:+.4f} to {hi:+.4f}, paired, {n} images): {verdict}")
    for key, what in (("defects", "caught"), ("goods", "passed")):
        c = ev[key]
        if c is not None:
            lines.append(f"{key}: {c['only_b_right']} {what} by B only, {c['only_a_right']} by A only "
                         f"(exact McNemar p={c['mcnemar_p']:.2g})")
    return lines


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
    # paired by file: an image one bundle could not score (its ROI off the frame, say) must not shift the others
    by_b = {r.path: r for r in b["_results"]}
    pairs = [(ra, by_b[ra.path]) for ra in a["_results"] if ra.path in by_b]
    unpaired = len(a["_results"]) + len(b["_results"]) - 2 * len(pairs)
    flips = [(ra.path.name, ra.verdict, rb.verdict) for ra, rb in pairs if ra.verdict != rb.verdict]
    lines.append(f"verdicts that differ: {len(flips)} of {len(pairs)}"
                 + "".join(f"\n  {n}: A {va} -> B {vb}" for n, va, vb in flips[:20]))
    if unpaired:
        lines.append(f"{unpaired} images scored by one bundle only are left out of the paired figures")
    sa, sb = np.array([ra.score for ra, _ in pairs]), np.array([rb.score for _, rb in pairs])
    labels = np.array([ra.label for ra, _ in pairs])
    ev = paired_evidence(labels, sa, sb, [ra.verdict == "FAIL" for ra, _ in pairs],
                         [rb.verdict == "FAIL" for _, rb in pairs])
    lines += evidence_lines(ev, len(pairs))
    plt = _plt()
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
    summary = {"a": str(bundle_a), "b": str(bundle_b), "flips": flips, **ev,
               **{f"{key}_{side}": r[key] for key in dict(ROWS).values() for side, r in (("a", a), ("b", b))}}
    (out / "compare.json").write_text(json.dumps(summary, indent=1))
    return {"table": "\n".join(lines), "plot": out / "compare.png", "summary": summary}
