"""Typed pipeline parameters: ``params.yaml`` as pydantic models.

Every step takes these objects as arguments; the CLI and the DVC stages build
them from ``params.yaml`` plus command-line overrides, so no step reads the file
behind anyone's back. A wrong value fails with the field's dotted name.

>>> p = Params()
>>> p.model.backbone, p.calibration.target_frr
('tf_efficientnet_lite0', 0.01)
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

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
    input_size: int | str = Field(224, description="the model's input: a square side in pixels, or WxH (e.g. "
                                                   "448x112) so a long, narrow part keeps its aspect")
    roi: str | None = Field(None, description="x,y,w,h in source pixels, or null for the whole image")
    coreset_ratio: float = Field(0.1, gt=0.0, le=1.0)
    coreset_chunk: int = Field(16384, ge=256)
    padim_features: int = Field(100, gt=0)
    fingerprint_dims: int = Field(32, ge=1, le=256, description="length of the per-part fingerprint for drift")
    batch_size: int = Field(16, gt=0)
    seed: int = 0

    @field_validator("input_size")
    @classmethod
    def _size(cls, v: int | str) -> int | str:
        h, w = input_hw(v)
        if not (32 <= h <= 1024 and 32 <= w <= 1024):
            raise ValueError(f"{v}: each side must be 32-1024 pixels")
        return v

    @property
    def input_hw(self) -> tuple[int, int]:
        """(height, width) of the model's input."""
        return input_hw(self.input_size)


def input_hw(size: int | str) -> tuple[int, int]:
    """(height, width) of ``model.input_size``: an int (square) or ``"WxH"``.

    >>> input_hw(224), input_hw("448x112")
    ((224, 224), (112, 448))
    """
    if isinstance(size, int):
        return size, size
    parts = str(size).lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        if len(parts) == 1 and parts[0].isdigit():
            return int(parts[0]), int(parts[0])
        raise ValueError(f"{size!r}: write the input size as one number (square) or WxH, e.g. 448x112")
    return int(parts[1]), int(parts[0])


class EnrollParams(StrictModel):
    """Input checks for enrollment."""

    min_good_images: int = Field(20, ge=2)
    skip_corrupt: bool = False


class CalibrationParams(StrictModel):
    """Threshold calibration from normal images only: every normal scored unseen, k-fold."""

    folds: int = Field(3, ge=2, le=10, description="each fold is scored against a bank built without it")
    target_frr: float = Field(0.01, gt=0.0, lt=0.5)
    pixel_fpr: float = Field(0.001, gt=0.0, lt=0.5)


class RecalibrateParams(StrictModel):
    """Updating a bundle with new normals (``lineguard recalibrate``)."""

    min_new_normals: int = Field(20, ge=5, description="fewer new normals than this are refused")
    far_spreads: float = Field(3.0, gt=0, description="new normals whose fingerprint centroid lies this many "
                                                      "baseline spreads from the old one (or most of which the "
                                                      "current model rejects) get a rebuild warning")


class LabelsParams(StrictModel):
    """The review -> Label Studio -> dataset loop."""

    classes: list[str] = Field([], description="defect classes of the product (Label Studio labels, quick tags)")
    project: str = Field("lineguard-{product}", description="Label Studio project title; {product} is filled in")
    val_fraction: float = Field(1 / 3, gt=0, lt=1, description="share of labeled parts held out for validation")
    min_per_class: int = Field(20, ge=1, description="retrain when a class has this many examples not yet trained on")
    seed: int = 0


class DetectorParams(StrictModel):
    """YOLO detector training (ultralytics, offline)."""

    model: str = Field("lite0-yolo11n", description="lite0-yolo11n (pretrained Lite0 trunk, offline), a model "
                                                     "yaml, or yolo11n.pt where it can be downloaded")
    imgsz: int = Field(320, ge=64, le=1280)
    epochs: int = Field(15, ge=1)
    batch: int = Field(8, ge=1)
    close_mosaic: int = Field(5, ge=0)
    synthetic_per_good: int = Field(3, ge=0, description="copy-paste images per good training image")
    max_goods: int | None = Field(None, ge=1, description="use at most this many good images for copy-paste")
    real_repeat: int = Field(2, ge=1, description="times each real training image is repeated")
    rotate: bool = Field(True, description="paste defects rotated about the image centre (round, centred parts)")
    confidence: float = Field(0.25, gt=0, lt=1, description="deployed confidence per class (station reports above)")
    iou: float = Field(0.7, gt=0, le=1)
    seed: int = 0


class ExportParams(StrictModel):
    """ONNX / TensorRT export and parity checks."""

    opset: int = Field(17, ge=13)
    parity_rtol: float = Field(1e-3, gt=0.0)
    parity_images: int = Field(8, gt=0)
    tensorrt_precision: Literal["fp16", "fp32"] = "fp16"
    search: Literal["ivf", "exact"] = Field("ivf", description="PatchCore on a CPU station: 'ivf' ships an "
                                            "inverted-file index beside the backbone graph (a fraction of the "
                                            "search work); 'exact' runs the whole graph's exact search")
    ivf_cells: int = Field(32, ge=1, description="k-means cells the memory bank is split into")
    ivf_probe: int = Field(4, ge=1, description="cells searched per patch (all of them: the exact result)")
    ivf_min_bank: int = Field(8192, ge=0, description="smaller banks keep the exact search: below ~8k patches the "
                                                      "index's fixed cost matches the GEMM it saves")
    ivf_rtol: float = Field(0.02, gt=0.0, description="largest relative image-score excess over the exact search "
                                                      "on the parity images; past it the bundle ships without the index")
    thumbnail_px: int = Field(128, ge=16)
    signing_key: str | None = Field("keys/pipeline.key", description="Ed25519 key that signs every bundle "
                                    "(`lineguard keys create`); relative to the project folder; null: unsigned")


class TrackingParams(StrictModel):
    """MLflow: embedded SQLite by default, a server URL at scale."""

    enabled: bool = True
    uri: str = "sqlite:///mlflow/mlflow.db"
    artifact_root: str = "mlflow/artifacts"
    experiment: str = "lineguard"
    model_name: str = Field("lineguard-{product}", description="registered model; {product} is filled in")
    alias: str = "candidate"


class Params(StrictModel):
    """All pipeline parameters (``params.yaml``, then a product file, then ``key=value`` overrides)."""

    product: str = Field("elpv-mono", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                         description="names the registered model (lineguard-<product>) and the runs")
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    enroll: EnrollParams = EnrollParams()
    calibration: CalibrationParams = CalibrationParams()
    recalibrate: RecalibrateParams = RecalibrateParams()
    labels: LabelsParams = LabelsParams()
    detector: DetectorParams = DetectorParams()
    export: ExportParams = ExportParams()
    tracking: TrackingParams = TrackingParams()

    @property
    def model_name(self) -> str:
        """The registered model for this product (``tracking.model_name`` with ``{product}`` filled in)."""
        return self.tracking.model_name.format(product=self.product)


def dotted_keys(model: type[BaseModel] = Params, prefix: str = "") -> list[str]:
    """Every settable ``a.b.c`` key of a params model."""
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += dotted_keys(ann, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def parse_overrides(items: list[str]) -> dict:
    """``["model.input_size=256", ...]`` -> ``{"model.input_size": 256}``; a misspelt key gets a suggestion.

    >>> parse_overrides(["model.input_size=256", "calibration.target_frr=0.02"])
    {'model.input_size': 256, 'calibration.target_frr': 0.02}
    >>> parse_overrides(["model.imput_size=256"])
    Traceback (most recent call last):
    ...
    serving.errors.ConfigError: unknown parameter 'model.imput_size'; did you mean 'model.input_size'?
    """
    keys, out = dotted_keys(), {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: write it as key=value, e.g. model.input_size=256")
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6) or difflib.get_close_matches(
                key.split(".")[-1], [k.split(".")[-1] for k in keys], n=1)
            hint = next((k for k in keys if close and k.endswith(close[0])), None)
            raise ConfigError(f"unknown parameter {key!r}" + (f"; did you mean {hint!r}?" if hint else
                                                              f"; see {', '.join(keys[:6])}, ..."))
        try:
            out[key] = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            out[key] = value
    return out


def read_params_file(path: Path) -> dict:
    """A YAML mapping of parameters; a syntax error is one line naming the file, line and column."""
    if not path.is_file():
        raise ConfigError(f"{path}: parameters file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{path}: not valid YAML: {where}{getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data, model, calibration, ...)")
    return data


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_params(path: str | Path | None = "params.yaml", overrides: dict | None = None,
                product_file: str | Path | None = None) -> Params:
    """``params.yaml`` (skipped when ``path`` is None), then ``product_file``, then dotted ``overrides``.

    >>> load_params(None, {"model.input_size": 224}).model.input_size
    224
    """
    raw: dict = read_params_file(Path(path)) if path is not None else {}
    if product_file is not None:
        raw = _merge(raw, read_params_file(Path(product_file)))
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
        source = " + ".join(str(p) for p in (path, product_file) if p) or "params"
        raise ConfigError(f"{source}: invalid parameters:\n" + "\n".join("  " + line for line in lines)) from None
