"""Read the evidence stations synced to a folder, ``file://`` or ``s3://``: one object per record,
``<target>/<station_id>/records/<boot_id>/<seq>.json`` (rewritten whole when the record changes on the
station), and the ``records.jsonl`` earlier stations appended to, where one is there.

In ``records.jsonl`` a record is appended again whenever it changes, so the last line of each
(station, boot, sequence) wins, and a record object wins over the lines. Encrypted pictures stay where they are: this
reads the records only.

>>> df = load_records("s3://line-evidence", since=time.time() - 86400)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from serving.errors import ConfigError

RECORDS = "records.jsonl"
RECORD_DIR = "records"


def storage_options(url: str) -> dict:
    """fsspec options for ``url``: an S3 endpoint from ``LINEGUARD_S3_ENDPOINT`` (MinIO, moto, a site's store),
    and failing fast when it is not there."""
    if not url.startswith("s3://"):
        return {}
    opts: dict = {"config_kwargs": {"connect_timeout": 2, "read_timeout": 5, "retries": {"total_max_attempts": 1}}}
    if os.environ.get("LINEGUARD_S3_ENDPOINT"):
        opts["client_kwargs"] = {"endpoint_url": os.environ["LINEGUARD_S3_ENDPOINT"]}
    return opts


def _fs(url: str):
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url, **storage_options(url))
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"evidence URL {url}: {exc}") from None
    return fs, root.rstrip("/")


def load_records(url: str, *, station: str | None = None, since: float | None = None,
                 until: float | None = None) -> pd.DataFrame:
    """Every station's records under ``url`` (or one station's), deduplicated, between ``since`` and ``until``."""
    url = url[len("file://"):] if url.startswith("file://") else url
    fs, root = _fs(url)
    try:
        if not fs.isdir(root):
            raise ConfigError(f"evidence {url}: not found; point --evidence at the stations' sync target "
                              "(evidence.sync_url in their configs)")
        stations = [station] if station else sorted(Path(p).name for p in fs.ls(root, detail=False) if fs.isdir(p))
        rows = []
        for st in stations:
            path = f"{root}/{st}/{RECORDS}"
            if fs.exists(path):
                with fs.open(path, "rt") as fh:
                    for line in fh:
                        if line.strip():
                            try:
                                rows.append(json.loads(line))
                            except json.JSONDecodeError:
                                continue  # a line cut short by a lost connection: the next sync rewrites it
            objects = f"{root}/{st}/{RECORD_DIR}"
            paths = sorted(p for p in fs.find(objects) if p.endswith(".json")) if fs.isdir(objects) else []
            for data in (fs.cat(paths).values() if paths else ()):  # fetched concurrently from S3
                try:
                    rows.append(json.loads(data))
                except json.JSONDecodeError:
                    continue  # not a record the station wrote (its objects are written whole)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"evidence {url}: not reachable ({exc}); check the network or LINEGUARD_S3_ENDPOINT") from None
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df = df.drop_duplicates(subset=["station_id", "boot_id", "seq"], keep="last")
    if since is not None:
        df = df[df["wall_time"] >= since]
    if until is not None:
        df = df[df["wall_time"] <= until]
    return df.sort_values("wall_time").reset_index(drop=True)
