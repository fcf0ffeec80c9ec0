"""What export does to the graph before it ships: constant 'same' padding, and each zero Pad folded into its Conv.

timm's TensorFlow-ported EfficientNet-Lite pads its stride-2 convolutions 'same' the TensorFlow way (one more
pixel at the bottom and right), working the amounts out from the input's shape at every call. Traced, each such
convolution becomes a chain of shape ops and a Pad that copies the whole activation, and ONNX Runtime keeps the Pad
and changes the memory layout around it. A bundle's input size is fixed, so the amounts are constants:
:func:`static_same_padding` makes them constants in torch (the same values, bit for bit), and
:func:`fold_pads_into_convs` moves each zero Pad into its Conv's own ``pads`` attribute, which ONNX allows to be
asymmetric. Lite0 at 224 px on this 2-core CPU: backbone 4.8 -> 3.1 ms, whole scorer 7.2 -> 5.5 ms, outputs equal.

>>> import timm, torch
>>> m = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
>>> static_same_padding(m, 224, 224)
5
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper
from timm.layers.conv2d_same import Conv2dSame
from timm.layers.padding import pad_same_arg


class StaticSameConv(torch.nn.Conv2d):
    """A convolution with TensorFlow 'same' padding fixed for one input size: ``same_pad`` is (left, right, top,
    bottom), plain ints, so a trace records a constant Pad."""

    same_pad: tuple[int, int, int, int] = (0, 0, 0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.same_pad), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def static_same_padding(module: torch.nn.Module, height: int, width: int) -> int:
    """Replace, in place, every timm ``Conv2dSame`` in ``module`` (which takes ``[B, 3, height, width]`` images)
    by a :class:`StaticSameConv` with the padding that input size gives it; returns how many were replaced."""
    sizes: dict[torch.nn.Module, tuple[int, int]] = {}

    def record(conv: torch.nn.Module, args: tuple) -> None:  # a pre-hook that returned a value would replace args
        sizes.setdefault(conv, tuple(args[0].shape[-2:]))

    hooks = [m.register_forward_pre_hook(record) for m in module.modules() if isinstance(m, Conv2dSame)]
    try:
        with torch.no_grad():
            module(torch.zeros(1, 3, height, width))
    finally:
        for h in hooks:
            h.remove()
    for parent in list(module.modules()):
        for name, conv in list(parent.named_children()):
            if conv in sizes:
                fixed = StaticSameConv(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0,
                                       conv.dilation, conv.groups, conv.bias is not None)
                fixed.load_state_dict(conv.state_dict())
                fixed.same_pad = tuple(int(p) for p in pad_same_arg(list(sizes[conv]), conv.weight.shape[-2:],
                                                                     conv.stride, conv.dilation))
                setattr(parent, name, fixed)
    return len(sizes)


def constant_value(graph: onnx.GraphProto, name: str, opsets) -> np.ndarray | None:
    """The value of tensor ``name`` when no graph input reaches it (initializers, Constant nodes and ops on them),
    computed with ONNX's reference evaluator; None otherwise."""
    from onnx.reference import ReferenceEvaluator

    producers = {o: n for n in graph.node for o in n.output}
    initializers = {i.name: i for i in graph.initializer}
    needed, todo, seen = set(), [name], set()
    while todo:
        t = todo.pop()
        if t in seen or not t:
            continue
        seen.add(t)
        if t in initializers:
            continue
        node = producers.get(t)
        if node is None:  # a graph input: not a constant
            return None
        needed.add(id(node))
        todo.extend(node.input)
    nodes = [n for n in graph.node if id(n) in needed]  # in graph order
    sub = helper.make_graph(nodes, "constant", [], [helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)],
                            [initializers[t] for t in seen if t in initializers])
    return ReferenceEvaluator(helper.make_model(sub, opset_imports=opsets)).run(None, {})[0]


def fold_pads_into_convs(model: onnx.ModelProto) -> int:
    """Fold, in place, every zero-constant Pad of height and width whose only consumer is a Conv into that Conv's
    ``pads`` attribute, then drop the nodes that only computed the pads; returns how many Pads were folded.
    Anything else (reflect padding, a non-zero value, padded batch or channels, pads from the input) stays."""
    g = model.graph
    outputs = {o.name for o in g.output}
    folded = 0
    for pad in [n for n in g.node if n.op_type == "Pad"]:
        users = [n for n in g.node if pad.output[0] in n.input]
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        if mode != b"constant" or len(users) != 1 or users[0].op_type != "Conv" or pad.output[0] in outputs:
            continue
        conv = users[0]
        if any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for a in conv.attribute):
            continue
        if len(pad.input) < 2 or (len(pad.input) > 3 and pad.input[3]):  # no pads, or pads of chosen axes only
            continue
        if (pads := constant_value(g, pad.input[1], model.opset_import)) is None:
            continue
        if len(pad.input) > 2 and pad.input[2]:
            value = constant_value(g, pad.input[2], model.opset_import)
            if value is None or np.any(np.asarray(value) != 0):
                continue
        pads = np.asarray(pads).reshape(-1)
        if pads.size != 8 or np.any(pads[[0, 1, 4, 5]] != 0) or np.any(pads < 0):
            continue
        attr = next((a for a in conv.attribute if a.name == "pads"), None)
        old = list(attr.ints) if attr is not None else [0, 0, 0, 0]
        new = [old[0] + int(pads[2]), old[1] + int(pads[3]), old[2] + int(pads[6]), old[3] + int(pads[7])]
        if attr is not None:
            conv.attribute.remove(attr)
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        g.node.remove(pad)
        folded += 1
    while True:  # the shape arithmetic that fed the folded Pads is dead now
        used = {i for n in g.node for i in n.input} | outputs
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            return folded
        for n in dead:
            g.node.remove(n)

