"""Export's graph changes: 'same' padding made constant in torch, and zero Pads folded into their convolutions."""

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from flows.anomaly.onnx_graph import fold_pads_into_convs, static_same_padding


def test_constant_same_padding_gives_lite0s_patch_embedding_bit_for_bit():
    from timm.layers.conv2d_same import Conv2dSame

    from flows.anomaly.model import PatchEmbedding, build_model

    model = build_model("patchcore", "tf_efficientnet_lite0", ["blocks.2", "blocks.4"])
    embed = PatchEmbedding(model).eval()
    x = torch.rand(2, 3, 224, 160)  # not square: each axis gets its own amounts
    with torch.no_grad():
        before = embed(x)
        assert static_same_padding(embed, 224, 160) == 5
        after = embed(x)
    assert not [m for m in embed.modules() if isinstance(m, Conv2dSame)]
    assert torch.equal(before, after)


def _pad_conv(pads, mode="constant", value=None, extra_user=False, pads_from_input=False):
    """x -> Pad(pads through Constant -> Cast, as torch exports them) -> Conv 3x3 stride 2 (-> also Relu on the Pad)."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 2, 3, 3)).astype(np.float32), "w")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 9, 8])]
    if pads_from_input:
        nodes, pad_in = [], ["x", "p_in"]
        inputs.append(helper.make_tensor_value_info("p_in", TensorProto.INT64, [8]))
    else:
        nodes = [helper.make_node("Constant", [], ["p32"], value=numpy_helper.from_array(np.array(pads, np.int32))),
                 helper.make_node("Cast", ["p32"], ["p"], to=TensorProto.INT64)]
        pad_in = ["x", "p"]
    if value is not None:
        nodes.append(helper.make_node("Constant", [], ["v"], value=numpy_helper.from_array(np.array(value, np.float32))))
        pad_in.append("v")
    nodes += [helper.make_node("Pad", pad_in, ["xp"], mode=mode),
              helper.make_node("Conv", ["xp", "w"], ["y"], strides=[2, 2])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_user:
        nodes.append(helper.make_node("Relu", ["xp"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", inputs, outputs, [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_zero_pad_moves_into_its_conv_and_the_output_stays():
    model = _pad_conv([0, 0, 0, 1, 0, 0, 2, 1])  # top 0, left 1, bottom 2, right 1: asymmetric, as TF 'same'
    x = np.random.default_rng(1).normal(size=(1, 2, 9, 8)).astype(np.float32)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert fold_pads_into_convs(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv"]  # the pad arithmetic went with it
    conv = model.graph.node[0]
    assert list(conv.input[:1]) == ["x"] and list(next(a for a in conv.attribute if a.name == "pads").ints) == [0, 1, 2, 1]
    np.testing.assert_allclose(ReferenceEvaluator(model).run(None, {"x": x})[0], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", [
    dict(pads=[0, 0, 1, 1, 0, 0, 1, 1], mode="reflect"),  # not zeros
    dict(pads=[0, 0, 1, 1, 0, 0, 1, 1], value=0.5),  # not zeros either
    dict(pads=[0, 1, 1, 1, 0, 0, 1, 1]),  # pads a channel: a Conv cannot
    dict(pads=[0, 0, 1, 1, 0, 0, 1, 1], extra_user=True),  # someone else reads the padded tensor
    dict(pads=[0, 0, 1, 1, 0, 0, 1, 1], pads_from_input=True),  # amounts known only at run time
])
def test_pads_a_conv_cannot_take_stay_where_they_are(case):
    model = _pad_conv(**case)
    before = [n.op_type for n in model.graph.node]
    assert fold_pads_into_convs(model) == 0
    assert [n.op_type for n in model.graph.node] == before
