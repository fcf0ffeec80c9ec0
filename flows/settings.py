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
    """Where ``params.yaml`` and the tool state live: ``$LINEGUARD_HOME``, else the nearest folder upwards from the
    current one that holds ``params.yaml``, else ``~/.lineguard`` (never a folder the user merely stands in)."""
    env = os.environ.get("LINEGUARD_HOME")
    if env:
        return Path(env).expanduser().resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file():
            return folder
    return Path.home() / ".lineguard"


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
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # stdout carries --json output
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
