"""Whether the parts the station calls normal still look like its enrollment, and new normals when not.

The Stability Index is measured against the running anomaly bundle's baseline (a schema 1 bundle has
none: alarmed), and its alert raises or clears the ``drift`` alarm. A recalibration capture keeps the
next parts as candidate normals (audited when started and stopped); the operator confirms them.

>>> normals = Normals(cfg.stability, alarms, audit); normals.watch(engine.bundle.manifest)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading

from serving.alarms import Alarms
from serving.drift.capture import Capture, CaptureRequest
from serving.drift.monitor import StabilityMonitor
from serving.drift.stability import StabilityConfig
from serving.engine.manifest import Manifest
from serving.errors import LineguardError
from serving.station.audit import AuditLog

log = logging.getLogger("lineguard.station")


class Normals:
    """The station's Stability Index and its recalibration capture."""

    def __init__(self, cfg: StabilityConfig, alarms: Alarms, audit: AuditLog) -> None:
        self.alarms, self.audit = alarms, audit
        self.stability = StabilityMonitor(None, cfg, on_alert=self._alert)
        self.capture: Capture | None = None
        self._lock = threading.Lock()

    def watch(self, manifest: Manifest) -> None:
        """Measure stability against this bundle's baseline (a schema 1 bundle has none: say so)."""
        self.stability.reset(manifest.baseline)
        if manifest.baseline is None:
            self.alarms.raise_("drift_unavailable", f"bundle {manifest.bundle_version} (schema "
                                                    f"{manifest.schema_version}) has no enrollment baseline: no "
                                                    "Stability Index; re-export it", "warning")
        else:
            self.alarms.clear("drift_unavailable")

    def _alert(self, raised: bool, report) -> None:
        if raised:
            c = report.components[report.moving]
            self.alarms.raise_("drift", f"normal has moved: Stability Index {report.index:.0f}, {c.name}: {c.detail}; "
                                        "capture new normals and recalibrate")
        else:
            self.alarms.clear("drift")

    def start_capture(self, req: CaptureRequest, user: str) -> Capture:
        """Keep the next parts as candidate normals (audited); replaces a finished capture."""
        with self._lock:
            if self.capture is not None and not self.capture.done:
                raise LineguardError(f"capture {self.capture.id} is still running ({self.capture.count} parts); "
                                     "stop it first")
            cap = Capture.start(req, user)
            self.audit.append(user, "capture_started", {"id": cap.id, **req.model_dump()})
            self.capture = cap
        log.info("capture %s started by %s: %s", cap.id, user, req.model_dump(exclude_none=True))
        return cap

    def stop_capture(self, user: str) -> Capture | None:
        """End the running capture now (audited); None if none was started."""
        cap = self.capture
        if cap is None:
            return None
        cap.stop()
        self.audit.append(user, "capture_stopped", {"id": cap.id, "count": cap.count})
        if cap.count:
            self.alarms.raise_("capture", f"capture {cap.id} stopped: {cap.count} parts kept; confirm them on the "
                                          "page", "warning")
        return cap

    def take(self) -> str | None:
        """The running capture's id if it keeps this part (the capture ends by itself at its limit), else None."""
        cap = self.capture
        if cap is None or cap.done:
            return None
        if cap.take():
            if cap.done:
                self.alarms.raise_("capture", f"{cap.count} parts of {cap.id} kept as new normals; confirm them on "
                                              "the page", "warning")
            return cap.id
        self.alarms.raise_("capture", f"{cap.id} ended: {cap.count} parts kept as new normals; confirm them on the "
                                      "page", "warning")
        return None
