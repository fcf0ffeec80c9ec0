"""The export scorer matches anomalib's model code."""

import pytest
import torch

from serving.errors import ConfigError


def test_the_map_is_anomalibs_upsample_and_blur_as_two_matrix_products():
    """anomalib's own compute_anomaly_map (nearest upsample, 33x33 Gaussian blur with reflected borders) is the
    reference, also for maps whose size is not a multiple of the patch grid."""
    from anomalib.models.image.patchcore.anomaly_map import AnomalyMapGenerator

    from flows.anomaly.model import AnomalyScorer, build_model

    model = build_model("patchcore", "tf_efficientnet_lite0", ["blocks.2", "blocks.4"])
    model.memory_bank = torch.zeros(4, 152)
    scorer, reference = AnomalyScorer(model), AnomalyMapGenerator(sigma=4)
    torch.manual_seed(0)
    for (h, w), size in (((28, 28), (224, 224)), ((8, 32), (64, 256)), ((9, 13), (70, 100)), ((7, 5), (20, 17))):
        patch = torch.rand(2, 1, h, w)
        score, amap = scorer.patch_map(patch, size)
        want = reference.compute_anomaly_map(patch, size)
        assert amap.shape == want.shape and torch.allclose(amap, want, atol=1e-5)
        assert torch.allclose(score, want.amax(dim=(1, 2, 3)), atol=1e-5)


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


def test_the_stations_numpy_map_equals_the_graphs_torch_map():
    """The search index's path rebuilds the map in numpy/opencv: nearest upsampling and the sigma-4 blur must give
    the graph's map, also for a long part whose size is not a multiple of the patch grid."""
    import numpy as np

    from flows.anomaly.model import AnomalyScorer, build_model
    from serving.engine.search import anomaly_map

    model = build_model("patchcore", "tf_efficientnet_lite0", ["blocks.2", "blocks.4"])
    model.memory_bank = torch.zeros(4, 152)
    scorer = AnomalyScorer(model)
    torch.manual_seed(0)
    for (h, w), size in (((28, 28), (224, 224)), ((8, 32), (64, 256)), ((9, 13), (70, 100))):
        patch = torch.rand(1, 1, h, w)
        score, ref = scorer.patch_map(patch, size)
        got = anomaly_map(patch[0, 0].numpy(), *size)
        np.testing.assert_allclose(got, ref[0, 0].numpy(), atol=1e-5)
        assert abs(got.max() - float(score)) < 1e-5


def test_the_traced_scorer_builds_no_kernel_per_call_and_equals_eager():
    """What the GPU bench replays from a CUDA graph: the trace of the whole scoring path. The blur's Gaussian
    kernels must be constants of the trace (a kernel built per call is host work that capture cannot record),
    and the trace must score as the eager module does."""
    from flows.anomaly.model import AnomalyScorer, build_model

    model = build_model("patchcore", "tf_efficientnet_lite0", ["blocks.2", "blocks.4"])
    torch.manual_seed(0)
    model.memory_bank = torch.randn(500, 152)
    scorer = AnomalyScorer(model).eval()
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        traced = torch.jit.trace(scorer, torch.zeros(1, 3, 96, 128), check_trace=False)
        ops = {node.kind() for node in traced.inlined_graph.nodes()}
        assert not ops & {"aten::exp", "aten::arange", "aten::linspace", "aten::pow"}, ops
        for got, want in zip(traced(x)[:3], scorer(x)[:3]):
            assert torch.equal(got, want)


def test_a_fixed_size_scorer_traces_without_host_constants():
    """The GPU bench loads the trace with ``map_location="cuda"``: every tensor of the trace but 0-d scalars
    (timm's padding arithmetic, which mixes with device tensors) must be a buffer, which moves with it. Built per call from numpy, the map's two matrices were constants on the host, and the
    lent GPU refused the trace ("mat2 is on cuda:0, different from other tensors on cpu")."""
    from flows.anomaly.model import AnomalyScorer, build_model

    model = build_model("patchcore", "tf_efficientnet_lite0", ["blocks.2", "blocks.4"])
    torch.manual_seed(0)
    model.memory_bank = torch.randn(500, 152)
    x = torch.rand(1, 3, 96, 128)
    fixed, free = AnomalyScorer(model, size=(96, 128)).eval(), AnomalyScorer(model).eval()
    with torch.no_grad():
        traced = torch.jit.trace(fixed, torch.zeros(1, 3, 96, 128), check_trace=False)
        constants = [n for n in traced.inlined_graph.nodes()
                     if n.kind() == "prim::Constant" and isinstance(n.output().toIValue(), torch.Tensor)
                     and n.output().toIValue().dim() > 0]
        assert not constants, [str(n) for n in constants]
        for got, want in zip(traced(x)[:3], free(x)[:3]):
            assert torch.equal(got, want)
        # another input size still gets its own matrices
        other = torch.rand(1, 3, 64, 64)
        assert torch.equal(fixed(other)[1], free(other)[1])


@pytest.mark.parametrize("layers", [["blocks.4", "blocks.2"], ["blocks.2", "blocks.2"], ["blocks.3"], []])
def test_layers_out_of_order_repeated_or_unknown_are_refused_by_name(layers):
    """anomalib would label blocks.2's features 'blocks.4' if the list ran deep to shallow, silently."""
    from flows.anomaly.model import check_layers

    with pytest.raises(ConfigError, match=r"model\.layers"):
        check_layers("tf_efficientnet_lite0", layers)
    check_layers("tf_efficientnet_lite0", ["blocks.1", "blocks.2", "blocks.4"])
