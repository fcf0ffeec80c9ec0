"""Process environment for the pipeline: offline, quiet, and state kept in the project.

Call :func:`quiet_environment` before importing prefect, mlflow, dvc or timm:
several of them read these variables once, at import time.

>>> env = quiet_environment(Path("/tmp/proj"))
>>> env["HF_HUB_OFFLINE"], env["DVC_NO_ANALYTICS"]
('1', '1')
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The folder holding ``params.yaml`` (the current directory, where CLI and DVC run)."""
    return Path.cwd()


def quiet_environment(root: Path | None = None) -> dict[str, str]:
    """Set telemetry-off, offline and state-location switches (existing values win); return them."""
    root = (root or project_root()).resolve()
    state = root / ".lineguard"
    values = {
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "PREFECT_UI_ENABLED": "false",
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "false",
        "YOLO_CONFIG_DIR": str(state / "ultralytics"),
        "MPLCONFIGDIR": str(state / "matplotlib"),
        "GIT_PYTHON_REFRESH": "quiet",
    }
    for key, value in values.items():
        os.environ.setdefault(key, value)
    return {k: os.environ[k] for k in values}
