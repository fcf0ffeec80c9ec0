"""Drift figures: the Stability Index over parts, and score histograms before and after a recalibration.

>>> stability_trend({"index": [100, 90, 40]}, 50, "/tmp/trend.png")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flows.evaluation.plots import _plt


def stability_trend(series: dict[str, list[float]], alert_below: float, path: str | Path, title: str = "",
                    marks: dict[str, int] | None = None) -> Path:
    """The index part by part (one line per series), the alert level, and marked events (e.g. a changeover)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.4), dpi=110)
    for name, values in series.items():
        ax.plot(np.arange(len(values)), values, label=name, lw=1.4)
    ax.axhline(alert_below, color="tab:red", ls="--", lw=1, label=f"alert below {alert_below:g}")
    for name, at in (marks or {}).items():
        ax.axvline(at, color="k", ls=":", lw=1)
        ax.text(at, 3, f" {name}", fontsize=8, va="bottom")
    ax.set_ylim(0, 105)
    ax.set_xlabel("part")
    ax.set_ylabel("Stability Index")
    ax.set_title(title or "Stability Index (100 = as at enrollment)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def before_after(panels: dict[str, tuple[dict[str, np.ndarray], float]], path: str | Path, title: str) -> Path:
    """Side-by-side score histograms, one panel per model: {panel: ({group: scores}, threshold)}."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), dpi=110, sharex=True, squeeze=False)
    allv = [np.asarray(v, float) for groups, thr in panels.values() for v in [*groups.values(), [thr]] if len(v)]
    bins = np.linspace(min(v.min() for v in allv), max(v.max() for v in allv), 45)
    for ax, (name, (groups, thr)) in zip(axes[0], panels.items()):
        for (g, v), color in zip(groups.items(), ("tab:blue", "tab:orange", "tab:green", "tab:red")):
            if len(v):
                ax.hist(np.asarray(v, float), bins=bins, alpha=0.55, color=color, label=f"{g} (n={len(v)})")
        ax.axvline(thr, color="k", ls="--", label=f"threshold {thr:.3g}")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("anomaly score")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("images")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
