"""The drift report: a window of synced evidence against the bundle's enrollment reference, with Evidently.

Per-part figures (anomaly score, luminance, colour balance, sharpness) are tested column by column
(Kolmogorov-Smirnov, p < 0.05), the part fingerprints as one embedding (a domain classifier: can a model
tell production from the enrollment normals? ROC AUC > 0.55 says yes). Beside the HTML: a plot of the
stations' Stability Index over the window and a JSON summary; all three are logged to MLflow.

>>> drift_report("s3://line-evidence", "models/elpv/bundle", "reports/drift.html", hours=24)   # doctest: +SKIP
{'html': 'reports/drift.html', 'n_parts': 5210, 'drifted_columns': 1, ...}
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from flows.data.evidence import load_records
from flows.params import Params, TrackingParams
from serving.engine.bundle import load_bundle
from serving.errors import ConfigError, DatasetError

FIGURES = ["score", "luminance", "color_balance", "sharpness"]


def _frames(records: pd.DataFrame, reference: dict, dims: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    emb_cols = [f"emb_{i:02d}" for i in range(dims)]
    ref = pd.DataFrame({k: reference[k] for k in FIGURES})
    ref[emb_cols] = np.asarray(reference["embedding"], np.float64)
    cur = records[FIGURES].astype(float).reset_index(drop=True)
    cur[emb_cols] = np.asarray(records["embedding"].tolist(), np.float64)
    return ref, cur, emb_cols


def drift_report(evidence: str, bundle: str | Path, out: str | Path, *, station: str | None = None,
                 hours: float = 24.0, now: float | None = None, tracking: TrackingParams | None = None) -> dict:
    """Write ``out`` (HTML), ``<out>_trend.png`` and ``<out>.json``; log them to MLflow when tracking is on."""
    manifest = load_bundle(bundle).manifest
    ref_file = manifest.explain.get("reference")
    if manifest.baseline is None or not ref_file:
        raise ConfigError(f"{bundle}: bundle schema {manifest.schema_version} has no enrollment reference to compare "
                          "production with; re-export it with this lineguard")
    reference = json.loads((Path(bundle) / ref_file).read_text())
    now = time.time() if now is None else now
    since = now - hours * 3600
    records = load_records(evidence, station=station)
    window = records[(records["wall_time"] >= since) & (records["wall_time"] <= now)] if not records.empty else records
    inspected = window[window["score"].notna() & window["embedding"].notna()] if not window.empty else window
    if inspected.empty:
        span = time.strftime("%Y-%m-%d %H:%M", time.gmtime(since)) + " - " + time.strftime("%H:%M UTC", time.gmtime(now))
        raise DatasetError(f"{evidence}: no inspected parts with drift figures in the window {span} "
                           f"({len(records)} records in all{', station ' + station if station else ''}); widen --hours, "
                           "check that the stations sync, and that they run a schema 2 bundle")
    dims = manifest.baseline.embedding_dims
    ref, cur, emb_cols = _frames(inspected, reference, dims)

    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import model as classifier_drift
    from evidently.metrics import EmbeddingsDrift
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=FIGURES + emb_cols, embeddings={"fingerprint": emb_cols})
    method = classifier_drift()
    report = Report([DataDriftPreset(columns=FIGURES, num_method="ks"),
                     EmbeddingsDrift(embeddings_name="fingerprint", drift_method=method)], include_tests=True)
    snap = report.run(current_data=Dataset.from_pandas(cur, data_definition=definition),
                      reference_data=Dataset.from_pandas(ref, data_definition=definition))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    snap.save_html(str(out))
    emb_score, emb_drift, _ = method(cur[emb_cols], ref[emb_cols])
    drifted = sorted({t["metric_config"]["params"]["column"] for t in snap.dict()["tests"]
                      if t.get("id") == "drift" and t["status"] == "FAIL"
                      and t["metric_config"]["params"].get("column") in FIGURES})

    from flows.drift.plots import stability_trend

    series = {f"{st} stability index": g["stability_index"].astype(float).tolist()
              for st, g in inspected.groupby("station_id") if g["stability_index"].notna().any()}
    trend = stability_trend(series or {"no index recorded": []}, 50.0, out.with_name(out.stem + "_trend.png"),
                            f"Stability Index, last {hours:g} h ({len(inspected)} parts)")
    summary = {"html": str(out), "trend": str(trend), "n_parts": int(len(inspected)),
               "stations": sorted(inspected["station_id"].unique().tolist()), "since": since, "until": now,
               "bundle_version": manifest.bundle_version, "drifted": drifted, "drifted_columns": len(drifted),
               "n_columns": len(FIGURES), "embedding_drift": bool(emb_drift), "embedding_drift_score": float(emb_score),
               "stability_index_mean": float(inspected["stability_index"].astype(float).mean())
               if inspected["stability_index"].notna().any() else None,
               "false_alarms": int((inspected["disposition"] == "false_alarm").sum()) if "disposition" in inspected else 0}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    if tracking is not None and tracking.enabled:
        summary["mlflow_run_id"] = _log(summary, manifest, tracking, [out, trend, out.with_suffix(".json")])
        out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    return summary


def _log(summary: dict, manifest, tracking: TrackingParams, files: list[Path]) -> str:
    from flows.tracking.mlflow_runs import _start, client

    params = Params.model_validate({**manifest.provenance.params, "tracking": tracking.model_dump()})
    c = client(tracking)
    rid = _start(c, params, "drift-report", summary["since"], {"bundle_version": manifest.bundle_version,
                                                               "stations": ",".join(summary["stations"])})
    for k in ("n_parts", "drifted_columns", "embedding_drift_score", "stability_index_mean", "false_alarms"):
        if summary.get(k) is not None:
            c.log_metric(rid, k, float(summary[k]))
    for f in files:
        c.log_artifact(rid, str(f), "drift")
    c.set_terminated(rid, "FINISHED")
    return rid
