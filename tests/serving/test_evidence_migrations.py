"""Evidence databases from earlier releases are migrated in place, keeping every record readable."""

import shutil
import sqlite3

import pytest

from helpers import ROOT
from serving.alarms import Alarms
from serving.errors import ConfigError
from serving.evidence import EvidenceConfig, EvidenceStore
from serving.evidence.migrations import LATEST, MIGRATIONS, table_columns
from serving.evidence.record import columns

FIXTURE = ROOT / "tests" / "fixtures" / "evidence_v0"


def open_copy(tmp_path):
    dst = tmp_path / "ev"
    shutil.copytree(FIXTURE, dst)
    (dst / "evidence.key").chmod(0o600)  # git checks files out readable by all: a station refuses such a key
    return EvidenceStore(EvidenceConfig(dir=str(dst), key_file=str(dst / "evidence.key")), Alarms(), "legacy-line"), dst


def test_a_database_written_by_the_first_release_is_migrated_and_keeps_every_record(tmp_path):
    ev, dst = open_copy(tmp_path)
    assert ev.migrated == (0, LATEST)
    rows = ev.query(limit=10, order="id")
    assert [(r.seq, r.verdict, r.rule) for r in rows] == [(1, "PASS", "anomaly.score"), (2, "FAIL", "anomaly"),
                                                          (3, "FAIL", "fail_safe.engine_error")]
    assert rows[1].disposition == "defect" and rows[1].disposition_user == "olga"
    assert rows[1].actuation.scheduled and rows[0].latency_ms == {"total": 30.0}
    assert rows[2].actuation is None and rows[2].detections == [] and rows[2].boot_id is None
    for r in rows[:2]:
        for name in (r.crop_file, r.overlay_file):
            assert ev.read_image(name).startswith(b"\x89PNG")  # still decrypts and authenticates
    backup = dst / "evidence.db.v0.bak"
    assert sqlite3.connect(backup).execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 3  # copy before migrating
    # and new records go in beside the old ones
    from serving.evidence import InspectionRecord

    rid = ev.record(InspectionRecord(station_id="legacy-line", boot_id="b2", seq=4, wall_time=1.8e9, t_trigger_ns=5,
                                     verdict="PASS", rule="anomaly.score"))
    assert ev.get(rid).boot_id == "b2"


def test_migrated_table_has_exactly_the_record_fields_as_columns(tmp_path):
    ev, _ = open_copy(tmp_path)
    assert set(table_columns(ev.db)) == {"id", *columns()}  # a new record field needs a numbered migration
    fresh = EvidenceStore(EvidenceConfig(dir=str(tmp_path / "new"), key_file=str(tmp_path / "no.key")), Alarms(), "s")
    assert table_columns(fresh.db) == table_columns(ev.db)


def test_reopening_a_migrated_database_changes_nothing(tmp_path):
    ev, dst = open_copy(tmp_path)
    ev.close()
    again = EvidenceStore(EvidenceConfig(dir=str(dst), key_file=str(dst / "evidence.key")), Alarms(), "legacy-line")
    assert again.migrated == (LATEST, LATEST) and len(again.query(limit=10)) == 3


def test_a_database_from_a_newer_station_is_refused_untouched(tmp_path):
    ev, dst = open_copy(tmp_path)
    ev.db.execute(f"PRAGMA user_version = {LATEST + 1}")
    ev.close()
    with pytest.raises(ConfigError, match="newer Lineguard"):
        EvidenceStore(EvidenceConfig(dir=str(dst), key_file=str(dst / "evidence.key")), Alarms(), "legacy-line")
    assert sqlite3.connect(dst / "evidence.db").execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 3


def test_migrations_are_numbered_in_order():
    assert [n for n, _, _ in MIGRATIONS] == list(range(1, LATEST + 1))
