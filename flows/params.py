"""Typed pipeline parameters: ``params.yaml`` as pydantic models.

Every step takes these objects as arguments; the CLI and the DVC stages build
them from ``params.yaml`` plus command-line overrides, so no step reads the file
behind anyone's back. A wrong value fails with the field's dotted name.

>>> p = Params()
>>> p.model.backbone, p.calibration.target_frr
('tf_efficientnet_lite0', 0.01)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from flows.data.prepare import ElpvParams
from serving.errors import ConfigError
from serving.strict import StrictModel, describe_errors


class DataParams(StrictModel):
    """Where the data set is, and how the embedded default is prepared."""

    dir: str = "data/elpv"
    elpv: ElpvParams = ElpvParams()


class ModelParams(StrictModel):
    """Anomaly model and backbone."""

    algorithm: Literal["patchcore", "padim"] = "patchcore"
    backbone: str = "tf_efficientnet_lite0"
    weights: str | None = None
    layers: list[str] = ["blocks.2", "blocks.4"]
    input_size: int = Field(224, ge=32, le=1024)
    roi: str | None = Field(None, description="x,y,w,h in source pixels, or null for the whole image")
    coreset_ratio: float = Field(0.1, gt=0.0, le=1.0)
    coreset_chunk: int = Field(16384, ge=256)
    padim_features: int = Field(100, gt=0)
    batch_size: int = Field(16, gt=0)
    seed: int = 0


class EnrollParams(StrictModel):
    """Input checks for enrollment."""

    min_good_images: int = Field(20, ge=2)
    skip_corrupt: bool = False


class CalibrationParams(StrictModel):
    """Threshold calibration from held-out normal images."""

    holdout_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    min_holdout: int = Field(8, ge=2)
    target_frr: float = Field(0.01, gt=0.0, lt=0.5)
    pixel_fpr: float = Field(0.001, gt=0.0, lt=0.5)


class ExportParams(StrictModel):
    """ONNX / TensorRT export and parity checks."""

    opset: int = Field(17, ge=13)
    parity_rtol: float = Field(1e-3, gt=0.0)
    parity_images: int = Field(8, gt=0)
    tensorrt_precision: Literal["fp16", "fp32"] = "fp16"
    thumbnail_px: int = Field(128, ge=16)


class TrackingParams(StrictModel):
    """MLflow: embedded SQLite by default, a server URL at scale."""

    enabled: bool = True
    uri: str = "sqlite:///mlflow/mlflow.db"
    artifact_root: str = "mlflow/artifacts"
    experiment: str = "lineguard"
    model_name: str = "lineguard-anomaly"
    alias: str = "candidate"


class Params(StrictModel):
    """All pipeline parameters (``params.yaml``)."""

    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    enroll: EnrollParams = EnrollParams()
    calibration: CalibrationParams = CalibrationParams()
    export: ExportParams = ExportParams()
    tracking: TrackingParams = TrackingParams()


def load_params(path: str | Path | None = "params.yaml", overrides: dict | None = None) -> Params:
    """Load ``params.yaml`` (defaults if absent) and apply dotted ``overrides``.

    >>> load_params(None, {"model.input_size": 224}).model.input_size
    224
    """
    raw: dict = {}
    if path is not None and Path(path).is_file():
        raw = yaml.safe_load(Path(path).read_text()) or {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = describe_errors(exc, model=Params).splitlines()
        raise ConfigError(f"{path or 'params'}: invalid parameters:\n" + "\n".join("  " + line for line in lines)) from None
