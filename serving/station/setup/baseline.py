"""The baseline step: the next N inspected frames saved as PNG files into a folder ``lineguard enroll`` reads."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from serving.errors import LineguardError
from serving.images import to_rgb
from serving.station.setup.camera import png, snapshot
from serving.station.setup.models import POLL_S, BaselineStatus, SetupError

class BaselineCapture:
    """Saves the next ``target`` inspected frames, whole, as PNG files, from a thread of its own (never the
    inspection thread). A part whose inspection failed before the engine has no picture and is skipped."""

    def __init__(self, station, root: Path, name: str, target: int, user: str) -> None:
        self.station, self.root, self.name, self.target, self.user = station, root, name, target, user
        self.folder = root / "train" / "good"
        self.saved = self.skipped = 0
        self.error: str | None = None
        self.started_at, self.finished_at = time.time(), None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"baseline-{name}", daemon=True)

    @property
    def done(self) -> bool:
        """True once the capture ended: all frames saved, stopped, or failed."""
        return self._done.is_set()

    def start(self) -> "BaselineCapture":
        """Create the folder and start saving."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the capture now; the frames saved so far stay."""
        self._stop.set()
        self._thread.join(5)

    def enroll_command(self) -> str:
        """The pipeline command that enrolls a bundle from this folder, with the station's ROI."""
        roi = self.station.cfg.roi
        return (f"lineguard enroll --data {self.root} --out models/{self.station.cfg.station_id}-{self.name}/bundle"
                + (f" --roi {roi}" if roi else "") + " calibration.target_frr=0.05")

    def status(self) -> BaselineStatus:
        """Progress for the page."""
        return BaselineStatus(name=self.name, folder=str(self.root), target=self.target, saved=self.saved,
                              skipped=self.skipped, done=self.done, stopped=self._stop.is_set(), error=self.error,
                              started_by=self.user, started_at=self.started_at, enroll_command=self.enroll_command())

    def _run(self) -> None:
        st = self.station
        last = st.state.last.seq if st.state.last is not None else None
        try:
            while self.saved < self.target and not self._stop.wait(POLL_S):
                rec, view, _ = snapshot(st)
                if rec is None or rec.seq == last:
                    if st.state.finished or not st.state.running:
                        raise SetupError(f"the station stopped inspecting after {self.saved} of {self.target} frames")
                    continue
                last = rec.seq
                if view is None:
                    self.skipped += 1
                    continue
                self._save(f"{self.name}-{rec.seq:07d}.png", to_rgb(view.image, source=f"part {rec.seq}"))
                self.saved += 1
        except (LineguardError, OSError) as exc:
            self.error = f"{exc}; {self.saved} frames kept in {self.folder}"
        finally:
            self.finished_at = time.time()
            self._write_summary()
            st.audit.append(self.user, "setup_baseline_captured", {
                "name": self.name, "folder": str(self.root), "saved": self.saved, "target": self.target,
                "skipped": self.skipped, "stopped": self._stop.is_set(), "error": self.error, "roi": st.cfg.roi})
            self._done.set()

    def _save(self, name: str, rgb: np.ndarray) -> None:
        data = png(rgb)
        tmp = self.folder / f".{name}.tmp"  # a half-written PNG never lands in the enrollment folder
        tmp.write_bytes(data)
        os.replace(tmp, self.folder / name)

    def _write_summary(self) -> None:
        info = {"station_id": self.station.cfg.station_id, "started_by": self.user, "started_at": self.started_at,
                "finished_at": self.finished_at, "saved": self.saved, "target": self.target, "roi": self.station.cfg.roi,
                "bundle_running": self.station.engine.bundle.manifest.bundle_version, "error": self.error,
                "enroll": self.enroll_command()}
        try:
            (self.root / "baseline.json").write_text(json.dumps(info, indent=2))
        except OSError:  # the images are what matters; the page still shows the figures
            pass


def check_disk(folder: Path, frame_bytes: int, count: int) -> None:
    """Refuse a capture the disk cannot hold (PNG of a camera frame: at most about its raw size)."""
    need = frame_bytes * count + 100 * 1024 * 1024  # and keep 100 MiB for the evidence buffer's next minutes
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise SetupError(f"{folder}: {count} frames need about {need / 2**20:.0f} MiB and {free / 2**20:.0f} MiB are "
                         "free; capture fewer frames or free space")
