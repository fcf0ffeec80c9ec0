"""Setup mode: what an engineer needs to commission a station, computed from the running station.

The setup page (``/setup``) walks the checklist of ``docs/setup.md``:

- **camera**: the latest frame with a focus figure (variance of the Laplacian, brightness-free) and an
  exposure histogram of the ROI (or of the whole frame when there is none);
- **ROI**: saved into the station's config file (only its ``roi:`` line changes; comments and every
  other key stay as they were) and applied from the next part;
- **baseline**: the next N frames as PNG files in ``<data>/baselines/<name>/train/good``, the layout
  ``lineguard enroll --data <data>/baselines/<name>`` reads;
- **signal test**: done once a part FAILs on its own merits after the test started and that part's
  reject pulse was fired on time;
- **checklist**: ticked items kept in ``<data>/setup-checklist.json``.

``<data>`` is the station's data folder, the folder of ``api.audit_log``. Every change is written to
the station's audit log.

>>> import numpy as np
>>> exposure_of(np.full((4, 4), 128, np.uint8))[2]
'ok'

One module per step: ``camera``, ``roi_file``, ``baseline``, ``signal_test``, ``checklist``; ``mode`` puts them
together; ``models`` holds the request and response models.
"""

from serving.station.setup.baseline import BaselineCapture, check_disk
from serving.station.setup.camera import exposure_of, frame_png, live_figures
from serving.station.setup.checklist import Checklist
from serving.station.setup.mode import SetupMode
from serving.station.setup.models import (CHECKLIST, STEP_IDS, BaselineRequest, BaselineStatus, ChecklistChange,
                                         ChecklistItemView, LiveFigures, RoiRequest, SetupError, SignalStatus)
from serving.station.setup.roi_file import apply_roi, check_roi, with_roi, write_roi
from serving.station.setup.signal_test import SignalTest

__all__ = ["CHECKLIST", "STEP_IDS", "BaselineCapture", "BaselineRequest", "BaselineStatus", "Checklist", "ChecklistChange",
           "ChecklistItemView", "LiveFigures", "RoiRequest", "SetupError", "SetupMode", "SignalStatus", "SignalTest",
           "apply_roi", "check_disk", "check_roi", "exposure_of", "frame_png", "live_figures", "with_roi", "write_roi"]
