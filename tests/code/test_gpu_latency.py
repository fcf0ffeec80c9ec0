"""The GPU bench's code path, on the CPU: what the lent GPU times must be the scorer the station runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from serving.engine.preprocess import InputSpec

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_latency.py"


def _bench():
    spec = importlib.util.spec_from_file_location("gpu_latency", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_bench_scores_as_the_station_scorer(tmp_path):
    """The rebuilt scorer (timm and plain tensors, for a GPU image without anomalib), its uint8 input path and
    the trace give the CPU scorer's score and map, and every variant runs."""
    from flows.anomaly.model import build_model

    bench = _bench()
    model = build_model("patchcore", "tf_efficientnet_lite0", ["blocks.2", "blocks.4"])
    torch.manual_seed(0)
    model.memory_bank = torch.randn(400, 152)
    spec = InputSpec(height=64, width=96)
    crop = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    report = bench.write_folder(model, spec, crop, tmp_path)
    assert report["plain_minus_scorer_score"] == 0.0 and report["plain_minus_scorer_map"] == 0.0
    assert report["uint8_path_minus_scorer_score"] < 1e-4
    assert report["trace_minus_scorer_score"] < 1e-4

    results = bench.run(str(tmp_path), device="cpu", n=2)
    variants = results["variants"]
    assert not [name for name, v in variants.items() if "error" in v], variants
    for name in ("trace_fp32", "trace_fp32_nofuser", "plain_fp32"):
        assert variants[name]["eager"]["score_abs_diff_vs_cpu"] < 1e-4, name
    # an fp16 backbone moves the score, but not far (0.03 on ELPV's real cell on the H200)
    assert variants["plain_fp16_backbone"]["eager"]["score_abs_diff_vs_cpu"] < 0.5
