"""Which bundles a station runs (the ``bundles:`` section of a station config): trust, and the versions it keeps."""

from __future__ import annotations

from pydantic import Field, model_validator

from serving.engine.signing import Trust
from serving.strict import StrictModel


class BundleConfig(StrictModel):
    """Trusted signing keys, and the station's own store of deployed bundle versions."""

    trusted_keys: list[str] = Field([], description="Ed25519 public keys (.pub from `lineguard keys create`) whose "
                                                    "signatures this station accepts")
    allow_unsigned: bool = Field(False, description="run bundles without a signature (shown as a warning on the page)")
    store: str = Field("station-data/bundles", description="where uploaded and deployed bundle versions are kept")
    keep_versions: int = Field(3, ge=2, le=50, description="bundle versions kept on disk per kind (rollback targets)")
    max_upload_mb: float = Field(512.0, gt=0, description="largest bundle upload accepted")

    @model_validator(mode="after")
    def _something_trusted(self) -> "BundleConfig":
        if not self.trusted_keys and not self.allow_unsigned:
            raise ValueError("trusted_keys is empty: list the pipeline's public key (`lineguard keys create` writes "
                             "keys/pipeline.pub), or set allow_unsigned: true to run unsigned bundles")
        return self

    def trust(self) -> Trust:
        """The loaded public keys (a missing or malformed key file is a config error naming it)."""
        return Trust.from_files(self.trusted_keys, self.allow_unsigned)
