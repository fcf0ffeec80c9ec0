"""Settings of the evidence buffer (the ``evidence:`` section of a station config)."""

from __future__ import annotations

from pydantic import Field

from serving.strict import StrictModel


class EvidenceConfig(StrictModel):
    """The encrypted evidence buffer."""

    dir: str = "station-data/evidence"
    key_file: str = "station-data/evidence.key"
    retention_h: float = Field(48.0, gt=0)
    quota_mb: float = Field(2048.0, gt=0)
    image_max_px: int = Field(512, ge=64, le=4096, description="kept crops and overlays are at most this wide or high")
    pass_sample_rate: float = Field(0.05, ge=0, le=1, description="fraction of PASS frames whose images are kept")
    sync_url: str | None = Field(None, description="a folder (file:// or path) evidence is copied to when reachable")
    sync_interval_s: float = Field(30.0, gt=0)
    max_pending: int = Field(100_000, ge=100, description="records kept in memory while the database cannot be written")
