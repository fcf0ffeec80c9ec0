"""The flows that keep a station learning, for Prefect deployments on a schedule (``lineguard scheduler``).

``drift_report_flow``: an Evidently drift report of the evidence the stations synced in a time window, against
the bundle's enrollment reference, logged to MLflow. Each run writes its own timestamped report, so a
schedule builds a history instead of overwriting one file.

``label_sync_flow``: confirmed defects to Label Studio (queued while it is down: the run then fails, which
is the scheduler's alarm, and the next run pushes the queue), completed annotations back.

``retrain_flow``: a new detector once a class has ``labels.min_per_class`` examples it was not trained on.

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


@task(name="push-to-label-studio")
def push_task(evidence: str, key: str, bundle: str, store: str) -> dict:
    """Confirmed defects as pre-annotated tasks."""
    from flows.labels import server, studio

    p = project_params()
    r, problems = studio.push_confirmed(studio.LabelStore(store), server.connection(), evidence, key, bundle,
                                        p.labels.classes, p.labels.project.format(product=p.product))
    for line in problems:
        print(f"skipped: {line}")
    return r.__dict__


@task(name="pull-from-label-studio")
def pull_task(store: str) -> dict:
    """Completed annotations into the label store."""
    from flows.labels import server, studio

    r = studio.pull(studio.LabelStore(store), server.connection(), project_params().labels.classes)
    for line in r.problems:
        print(f"left out: {line}")
    return r.__dict__


@flow(name="lineguard-label-sync", log_prints=True)
def label_sync_flow(evidence: str, key: str, bundle: str, store: str = "data/labels") -> dict:
    """Push confirmed defects, then pull annotations."""
    root = project_root()  # a scheduled run starts in the runner's folder, not the one the schedule was made in
    store, key, bundle = (str(root / x) if not Path(x).is_absolute() else x for x in (store, key, bundle))
    if "://" not in evidence and not Path(evidence).is_absolute():
        evidence = str(root / evidence)
    return {"push": push_task(evidence, key, bundle, store), "pull": pull_task(store)}


@flow(name="lineguard-retrain", log_prints=True)
def retrain_flow(store: str = "data/labels", out: str = "models/detector", goods: str | None = None) -> dict:
    """Retrain the detector if a class is due; the result says why not otherwise."""
    from flows.detector.retrain import retrain_if_due

    root = project_root()
    store, out = (str(root / x) if not Path(x).is_absolute() else x for x in (store, out))
    if goods and not Path(goods).is_absolute():
        goods = str(root / goods)
    result = retrain_if_due(store, out, project_params(), goods=goods)
    print("retrained: " + (f"{result['bundle']} mAP50 {result['map50']:.3f}" if result["retrained"] else
                           "; ".join(f"{c}: {w}" for c, w in result["why"].items())))
    return result
