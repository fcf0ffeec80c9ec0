"""The TensorRT build command and options (TensorRT itself does not install here)."""

import pytest

from flows.anomaly.tensorrt_build import trtexec_command


def test_fp16_dynamic_batch_command():
    cmd = trtexec_command("b/model.onnx", "b/model.plan", input_name="image", shape=(3, 256, 256), max_batch=4)
    assert cmd[0] == "trtexec"
    assert "--onnx=b/model.onnx" in cmd and "--saveEngine=b/model.plan" in cmd
    assert "--minShapes=image:1x3x256x256" in cmd
    assert "--optShapes=image:1x3x256x256" in cmd
    assert "--maxShapes=image:4x3x256x256" in cmd
    assert "--fp16" in cmd


def test_fp32_has_no_fp16_flag_and_bad_precision_refused():
    assert "--fp16" not in trtexec_command("m.onnx", "m.plan", input_name="x", shape=(3, 8, 8), precision="fp32")
    with pytest.raises(ValueError, match="int8"):
        trtexec_command("m.onnx", "m.plan", input_name="x", shape=(3, 8, 8), precision="int8")
