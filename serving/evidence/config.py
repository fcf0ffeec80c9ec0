"""Settings of the evidence buffer (the ``evidence:`` section of a station config).

The sync target is one URL: a folder (a plain path or ``file:///path``) or an S3-compatible bucket
(``s3://bucket/prefix``). For S3, the endpoint and credentials come from here or, when left out, from the
standard AWS environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3``, ``~/.aws``).
The secret access key is never written in the config itself: ``sync_secret_file`` names a file that holds it.

>>> EvidenceConfig(sync_url="s3://line-evidence/plant-a", sync_endpoint="http://127.0.0.1:9000").sync_url
's3://line-evidence/plant-a'
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, model_validator

from serving.strict import StrictModel, field_error

SYNC_SCHEMES = ("file", "s3")


class EvidenceConfig(StrictModel):
    """The encrypted evidence buffer."""

    dir: str = "station-data/evidence"
    key_file: str = "station-data/evidence.key"
    retention_h: float = Field(48.0, gt=0)
    quota_mb: float = Field(2048.0, gt=0)
    min_free_mb: float = Field(32.0, ge=0, description="disk space kept for records: images are not written below "
                                                        "it, the oldest images go to keep twice it free, and a reserve "
                                                        "file of that size is held once the disk runs low")
    image_max_px: int = Field(512, ge=64, le=4096, description="kept crops and overlays are at most this wide or high")
    pass_sample_rate: float = Field(0.05, ge=0, le=1, description="fraction of PASS frames whose images are kept")
    sync_url: str | None = Field(None, description="where evidence is copied when reachable: a folder, "
                                                   "file:///path or s3://bucket/prefix")
    sync_endpoint: str | None = Field(None, description="S3 API endpoint (MinIO, a site's store); default: AWS, or "
                                                        "AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL")
    sync_region: str | None = Field(None, description="S3 region (default: the AWS environment's)")
    sync_key_id: str | None = Field(None, description="S3 access key id; with sync_secret_file")
    sync_secret_file: str | None = Field(None, description="file holding the S3 secret access key (mode 600)")
    sync_timeout_s: float = Field(5.0, gt=0, le=120, description="connect and read timeout of one sync request")
    sync_batch: int = Field(200, ge=1, le=10_000, description="records uploaded per batch (one manifest each)")
    sync_interval_s: float = Field(30.0, gt=0)
    max_pending: int = Field(100_000, ge=100, description="records kept in memory while the database cannot be written")

    @model_validator(mode="after")
    def _sync_target_holds(self) -> "EvidenceConfig":
        url = self.sync_url
        s3 = bool(url) and url.startswith("s3://")
        if url and "://" in url:
            parts = urlsplit(url)
            if parts.scheme not in SYNC_SCHEMES:
                raise field_error("sync_url", f"scheme {parts.scheme!r} is not supported; use a folder, "
                                              "file:///path or s3://bucket/prefix", url)
            if "@" in parts.netloc:
                raise field_error("sync_url", "credentials do not go in the URL (it is shown on the page and "
                                              "logged); use sync_key_id and sync_secret_file", "(hidden)")
            if s3 and not parts.netloc:
                raise field_error("sync_url", "an S3 URL names its bucket: s3://bucket[/prefix]", url)
        if self.sync_endpoint is not None:
            ep = urlsplit(self.sync_endpoint)
            if ep.scheme not in ("http", "https") or not ep.hostname:
                raise field_error("sync_endpoint", "an http:// or https:// URL of the S3 API, like "
                                                   "http://minio.plant:9000", self.sync_endpoint)
            if "@" in ep.netloc:
                raise field_error("sync_endpoint", "credentials do not go in the URL; use sync_key_id and "
                                                   "sync_secret_file", "(hidden)")
        extra = [n for n in ("sync_endpoint", "sync_region", "sync_key_id", "sync_secret_file")
                 if getattr(self, n) is not None]
        if extra and not s3:
            raise field_error(extra[0], f"{', '.join(extra)} only apply to an s3:// sync_url", getattr(self, extra[0]))
        if (self.sync_key_id is None) != (self.sync_secret_file is None):
            missing = "sync_secret_file" if self.sync_secret_file is None else "sync_key_id"
            raise field_error(missing, "sync_key_id and sync_secret_file go together (or leave both out to use "
                                       "the AWS environment variables)", None)
        return self
