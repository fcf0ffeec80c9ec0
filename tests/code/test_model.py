"""The export scorer matches anomalib's model code."""

import torch


def test_separable_blur_equals_anomalibs_2d_blur():
    from anomalib.models.image.patchcore.anomaly_map import AnomalyMapGenerator

    from flows.anomaly.model import SeparableGaussianBlur

    x = torch.rand(2, 1, 64, 48)
    assert torch.allclose(SeparableGaussianBlur(4.0)(x), AnomalyMapGenerator(sigma=4).blur(x), atol=1e-5)


def test_the_search_finds_each_patchs_exact_nearest_bank_patch():
    """TopK(1) over the GEMM distances: every patch's exact nearest bank patch and its distance, in image order."""
    from flows.anomaly.model import AnomalyScorer, build_model

    m = build_model("patchcore", "tf_efficientnet_lite0", ["blocks.2", "blocks.4"])
    torch.manual_seed(0)
    m.memory_bank = torch.randn(3000, 152)
    emb = torch.randn(2, 152, 7, 5)
    flat = emb.permute(0, 2, 3, 1).reshape(-1, 152)
    ref = torch.cdist(flat.double(), m.memory_bank.double()).min(1)
    dist, match = AnomalyScorer(m).nearest(emb)
    assert dist.shape == match.shape == (2, 7, 5)
    assert torch.equal(match.reshape(-1), ref.indices)
    assert torch.allclose(dist.reshape(-1).double(), ref.values, atol=1e-4)
