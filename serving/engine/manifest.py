"""``manifest.json``'s schema: the typed, strictly validated record of what a bundle holds and how it was made.

:mod:`serving.engine.bundle` reads and verifies a bundle on disk against it; the pipeline writes it at export.

>>> SCHEMA_VERSION in SUPPORTED_SCHEMAS
True
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from serving.drift.baseline import Baseline
from serving.engine.preprocess import InputSpec, Roi
from serving.strict import StrictModel

SCHEMA_VERSION = 2  #: 2 adds the part fingerprint output and the drift baseline
SUPPORTED_SCHEMAS = (1, 2)  #: a station still runs schema 1 bundles, without drift features
MODEL_FILE = "model.onnx"  #: the default graph name export writes; stations read ``manifest.model_file``
BACKBONE_FILE = "bench/backbone.onnx"  #: the backbone alone, for ``lineguard-station bench`` (not run on the line)
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"  #: a bundle version also names a folder in the store


class ScoreStats(StrictModel):
    """Summary of the normal scores a threshold came from."""

    n: int
    mean: float
    std: float
    min: float
    p50: float
    p95: float
    p99: float
    max: float


class Thresholds(StrictModel):
    """Calibrated from normal images only; the station reads them from here, not the graph."""

    image: float
    pixel: float
    target_frr: float = Field(description="false-reject rate the image threshold was chosen for")
    holdout_frr: float = Field(description="fraction of the unseen normal scores above the threshold")
    pixel_fpr: float = Field(description="fraction of normal pixels above the pixel threshold")
    method: str
    frr_expected: float | None = Field(None, description="the false-reject rate to expect on new normal parts")
    frr_interval: tuple[float, float] | None = Field(None, description="its 95 % interval")
    n_normals: int | None = Field(None, description="how many unseen normal scores the threshold rests on")
    folds: int | None = Field(None, description="k of the k-fold scoring that made those scores unseen")
    normal_image_scores: ScoreStats
    normal_pixel_scores: ScoreStats
    normal_scores: list[float] = Field(default=[], description="the held-out normal image scores themselves")


class TensorRTInfo(StrictModel):
    """What became of the TensorRT build (present or not, and why)."""

    built: bool
    reason: str | None = None
    file: str | None = None
    version: str | None = None
    precision: str | None = None
    gpu: str | None = None
    parity_max_rel_diff: float | None = None


class Provenance(StrictModel):
    """Where the bundle came from."""

    dataset_hash: str
    image_count: int
    holdout_count: int
    params: dict
    git_commit: str | None
    mlflow_run_id: str | None = None
    onnx_opset: int
    created_at: str = Field(description="ISO 8601 with its UTC offset: a station orders versions by it")
    lineguard_version: str
    torch_version: str | None = None
    anomalib_version: str | None = None
    parent_version: str | None = Field(None, description="the bundle this one was derived from (recalibration)")
    created_by: str | None = Field(None, description="who made it (user@host)")

    @field_validator("created_at")
    @classmethod
    def _aware(cls, v: str) -> str:
        try:
            when = datetime.fromisoformat(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an ISO 8601 time") from None
        if when.tzinfo is None:
            raise ValueError(f"{v!r} has no UTC offset")
        return v

    @property
    def created(self) -> datetime:
        """``created_at`` as a time."""
        return datetime.fromisoformat(self.created_at)


class FileEntry(StrictModel):
    """One file of the bundle, by its hash."""

    sha256: str
    bytes: int


class DetectorSpec(StrictModel):
    """How a detector bundle's raw output becomes boxes, and at what confidence each class is reported."""

    format: Literal["yolo-raw"] = Field("yolo-raw", description="[1, 4 + classes, N]: cx, cy, w, h in input "
                                                                "pixels, then one score per class; NMS in numpy")
    confidence: dict[str, float] = Field(description="class -> deployed confidence (boxes below are not reported)")
    iou: float = Field(0.7, gt=0, le=1, description="NMS overlap above which the weaker box of a class is dropped")
    letterbox: bool = Field(True, description="resize keeping the aspect ratio, pad with grey (as in training)")
    metrics: dict = Field({}, description="held-out evaluation: map50, per-class AP50 / precision / recall")


class SearchSpec(StrictModel):
    """PatchCore's nearest-neighbour search outside the graph (:mod:`serving.engine.search`): the backbone
    graph, then an IVF index over the memory bank. Absent: the whole graph (``model_file``) searches exactly."""

    method: Literal["ivf"] = "ivf"
    graph: str = Field(description="the backbone graph (image -> patch embeddings) the index is searched after")
    files: dict[str, str] = Field(description="role -> .npy file: centroids, bank, bank_sq, offsets, order, "
                                              "fingerprint_mean, fingerprint_proj")
    cells: int = Field(gt=0, description="k-means cells the bank is split into")
    probe: int = Field(gt=0, description="cells searched per patch")
    max_rel_diff: float = Field(description="largest relative difference of an image score from the exact search, "
                                            "on the parity images (the index only ever over-estimates)")
    map_max_rel_diff: float = Field(description="the same for the anomaly maps, relative to the map's range")


class Manifest(StrictModel):
    """``manifest.json``: everything a station needs to run and trust a bundle."""

    schema_version: int
    bundle_version: str = Field(pattern=VERSION_PATTERN)
    model_kind: Literal["anomaly", "detector"]
    algorithm: str
    backbone: str
    input: InputSpec
    outputs: list[str]
    thresholds: Thresholds | None = Field(None, description="anomaly bundles: calibrated from normals")
    detector: DetectorSpec | None = Field(None, description="detector bundles: box decoding and confidences")
    roi: Roi | None
    class_names: list[str] = []
    files: dict[str, FileEntry]
    model_file: str = MODEL_FILE
    parity: dict[str, float]
    tensorrt: TensorRTInfo
    explain: dict[str, str] = {}
    bench: dict[str, str] = Field({}, description="graphs the latency benchmark compares with: backbone = the "
                                                   "feature extractor alone, same input")
    provenance: Provenance
    baseline: Baseline | None = Field(None, description="what normal looked like at enrollment (schema 2)")
    search: SearchSpec | None = Field(None, description="PatchCore: the approximate search a CPU station runs "
                                                        "instead of the whole graph's exact one")

    @model_validator(mode="after")
    def _kind_has_its_section(self) -> "Manifest":
        if self.model_kind == "anomaly" and self.thresholds is None:
            raise ValueError("an anomaly bundle needs 'thresholds'")
        if self.model_kind == "detector":
            if self.detector is None or not self.class_names:
                raise ValueError("a detector bundle needs 'detector' and 'class_names'")
            unknown = sorted(set(self.detector.confidence) - set(self.class_names))
            if unknown:
                raise ValueError(f"detector.confidence names classes {unknown} that are not in class_names")
        return self

    @property
    def search_summary(self) -> str:
        """Which nearest-neighbour search a CPU station runs with this bundle, for people."""
        s = self.search
        if s is None:
            return "exact (in the graph)"
        return (f"index, {s.cells} cells, {s.probe} probed (scores at most {s.max_rel_diff:.1%} above exact on the "
                "parity images)")

    @property
    def has_fingerprint(self) -> bool:
        """True when the graph outputs a part fingerprint (schema 2 and later)."""
        return "embedding" in self.outputs and self.baseline is not None and self.baseline.embedding_dims > 0
