"""The flows that keep a station learning, for Prefect deployments on a schedule (``lineguard scheduler``).

``drift_report_flow``: an Evidently drift report of the evidence the stations synced in a time window, against
the bundle's enrollment reference, logged to MLflow. Each run writes its own timestamped report, so a
schedule builds a history instead of overwriting one file.

>>> drift_report_flow("s3://line-evidence", "models/elpv/bundle", "reports/drift")   # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, task

from flows.drift import report as report_step
from flows.params import Params, load_params
from flows.settings import project_root


def project_params() -> Params:
    """The project's parameters (params.yaml) as the scheduled run finds them, for tracking settings."""
    path = project_root() / "params.yaml"
    return load_params(path if path.is_file() else None, {})


@task(name="drift-report")
def drift_task(evidence: str, bundle: str, out: str, station: str | None, hours: float) -> dict:
    """Read the window's synced evidence and write the Evidently report, trend plot and summary."""
    return report_step.drift_report(evidence, bundle, out, station=station, hours=hours,
                                    tracking=project_params().tracking)


@flow(name="lineguard-drift-report", log_prints=True)
def drift_report_flow(evidence: str, bundle: str, out: str, station: str | None = None, hours: float = 24.0) -> dict:
    """One drift report: ``out`` is a folder (a timestamped report per run) or an ``.html`` file."""
    target = Path(out)
    if target.suffix != ".html":
        target = target / f"drift-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.html"
    summary = drift_task(evidence, bundle, str(target), station, hours)
    print(f"drift report {summary['html']}: {summary['n_parts']} parts, drifted {summary['drifted'] or 'none'}, "
          f"embedding drift {summary['embedding_drift']}")
    return summary
