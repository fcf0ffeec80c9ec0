"""Figures a person would rather look at than read: score histograms and heatmap grids.

>>> score_histogram({"held-out normal": [1.0, 1.2]}, 1.5, "/tmp/hist.png")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def score_histogram(groups: dict[str, np.ndarray], threshold: float, path: str | Path, title: str = "Image scores") -> Path:
    """Overlaid histograms of score groups with the calibrated threshold marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    values = [np.asarray(v, float) for v in groups.values() if len(v)]
    lo = min(v.min() for v in values + [np.array([threshold])])
    hi = max(v.max() for v in values + [np.array([threshold])])
    bins = np.linspace(lo, hi, 40)
    for (name, v), color in zip(groups.items(), ("tab:blue", "tab:green", "tab:red", "tab:orange")):
        if len(v):
            ax.hist(v, bins=bins, alpha=0.55, label=f"{name} (n={len(v)})", color=color)
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set_xlabel("anomaly score (higher = more anomalous)")
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def overlay_grid(images: list[np.ndarray], titles: list[str], path: str | Path, cols: int = 4) -> Path:
    """A grid of heatmap overlays (uint8 RGB) with one title each."""
    plt = _plt()
    rows = max(1, int(np.ceil(len(images) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), dpi=100, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, title in zip(axes.ravel(), images, titles):
        ax.imshow(img)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
