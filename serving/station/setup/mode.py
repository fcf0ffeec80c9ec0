"""Setup mode of one running station: the steps of the package put together, as the setup routes call them."""

from __future__ import annotations

import threading
from pathlib import Path

from serving.engine.preprocess import Roi
from serving.errors import ConfigError
from serving.station.setup.baseline import BaselineCapture, check_disk
from serving.station.setup.camera import snapshot
from serving.station.setup.checklist import Checklist
from serving.station.setup.models import BASELINES, CHECKLIST_FILE, BaselineRequest, SetupError
from serving.station.setup.roi_file import apply_roi, check_roi, write_roi
from serving.station.setup.signal_test import SignalTest

class SetupMode:
    """Setup mode of one running station: the checklist, the running baseline capture and signal test."""

    def __init__(self, station) -> None:
        self.station = station
        self.data_dir = Path(station.cfg.api.audit_log).resolve().parent
        self.checklist = Checklist(self.data_dir / CHECKLIST_FILE, station.audit)
        self.baseline: BaselineCapture | None = None
        self.signal: SignalTest | None = None
        self._seen = None  # (record, view) of the latest part with a picture
        self._lock = threading.Lock()

    def latest(self):
        """(record, view, engine): the latest part with a picture. A part without one (dropped, or failed before
        the engine) leaves the one before it on show: the camera step and the ROI need a picture."""
        rec, view, engine = snapshot(self.station)
        if view is not None:
            self._seen = (rec, view)
        elif self._seen is not None:
            rec, view = self._seen
        return rec, view, engine

    @property
    def config_file(self) -> Path | None:
        """The station's config file (None when the station was built in code: the ROI cannot be saved)."""
        return self.station.cfg.source_file

    def roi(self) -> tuple[str | None, str]:
        """(ROI in force as x,y,w,h, where it comes from: 'config', 'bundle' or 'none')."""
        st = self.station
        if st.cfg.roi:
            return st.cfg.roi, "config"
        r = st.engine.roi
        return (f"{r.x},{r.y},{r.w},{r.h}", "bundle") if r is not None else (None, "none")

    def save_roi(self, text: str | None, user: str) -> str | None:
        """Validate, write into the config file, apply from the next part, audit. Returns the ROI saved."""
        st = self.station
        path = self.config_file
        if path is None:
            raise SetupError("this station was not started from a config file (lineguard-station run --config "
                             "FILE), so there is no file to save the ROI in")
        roi = Roi.parse(text)
        text = None if roi is None else f"{roi.x},{roi.y},{roi.w},{roi.h}"
        _, view, _ = self.latest()
        if roi is not None and view is None:
            raise SetupError("no camera frame seen yet, so the ROI cannot be checked against it; wait for the first "
                             "inspected part")
        check_roi(st, roi, (view.image.shape[1], view.image.shape[0]) if view is not None else None)
        before = st.cfg.roi
        with self._lock:
            try:
                write_roi(path, text)
            except ConfigError as exc:  # the file on disk no longer parses: say so, change nothing
                raise SetupError(f"{exc}; the ROI was not saved") from None
            apply_roi(st, roi, text)
            st.audit.append(user, "setup_roi_saved", {"before": before, "after": text, "config": str(path),
                                                      "applied": "from the next part"})
        return text

    def start_baseline(self, req: BaselineRequest, user: str) -> BaselineCapture:
        """Start saving the next frames into ``<data>/baselines/<name>``; the folder must be new or empty."""
        st = self.station
        with self._lock:
            if self.baseline is not None and not self.baseline.done:
                raise SetupError(f"baseline '{self.baseline.name}' is still capturing ({self.baseline.saved} of "
                                 f"{self.baseline.target}); stop it first")
            root = self.data_dir / BASELINES / req.name
            good = root / "train" / "good"
            if good.is_dir() and any(good.iterdir()):
                raise SetupError(f"{good} already holds {sum(1 for _ in good.iterdir())} files; choose another name "
                                 "(nothing was overwritten)")
            _, view, _ = self.latest()
            check_disk(root, view.image.nbytes if view is not None else 3 * 1920 * 1080, req.count)
            cap = BaselineCapture(st, root, req.name, req.count, user)
            st.audit.append(user, "setup_baseline_started", {"name": req.name, "folder": str(root),
                                                             "count": req.count, "roi": st.cfg.roi})
            self.baseline = cap.start()
        return cap

    def stop_baseline(self, user: str) -> BaselineCapture:
        """End the running baseline capture now (the frames saved so far stay)."""
        cap = self.baseline
        if cap is None:
            raise SetupError("no baseline capture was started")
        if not cap.done:
            st = self.station
            st.audit.append(user, "setup_baseline_stopped", {"name": cap.name, "saved": cap.saved})
            cap.stop()
        return cap

    def start_signal_test(self, user: str) -> SignalTest:
        """(Re)start the signal test: only parts inspected from now on count."""
        test = SignalTest(self.station, user)
        self.station.audit.append(user, "setup_signal_test_started", {"after_seq": test.after_seq,
                                                                      "actuator": self.station.cfg.actuator.kind})
        self.signal = test
        return test
