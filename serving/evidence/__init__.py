"""The evidence room: per-part records, encrypted images, retention and sync. Knows no web and no PLC."""

from serving.evidence.config import EvidenceConfig
from serving.evidence.record import ActuationOutcome, InspectionRecord
from serving.evidence.store import EvidenceStore

__all__ = ["ActuationOutcome", "EvidenceConfig", "EvidenceStore", "InspectionRecord"]
