"""The export scorer matches anomalib's model code."""

import torch


def test_separable_blur_equals_anomalibs_2d_blur():
    from anomalib.models.image.patchcore.anomaly_map import AnomalyMapGenerator

    from flows.anomaly.model import SeparableGaussianBlur

    x = torch.rand(2, 1, 64, 48)
    assert torch.allclose(SeparableGaussianBlur(4.0)(x), AnomalyMapGenerator(sigma=4).blur(x), atol=1e-5)
