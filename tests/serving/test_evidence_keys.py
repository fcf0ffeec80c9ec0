"""Evidence keys: one key per buffer (its fingerprint in the database), a replaced or exposed key refused at
start with what to do, a key file changed under a running station alarmed, and an image that cannot be
decrypted is an HTTP 410 naming the record, never a 500."""

import shutil
import subprocess
import sys
import time

import pytest
import yaml
from fastapi.testclient import TestClient
from helpers import ROOT

from serving.alarms import Alarms
from serving.errors import ConfigError
from serving.evidence import EvidenceConfig, EvidenceStore, InspectionRecord
from serving.evidence.crypto import KeyRefused, generate_key, key_fingerprint, load_key
from serving.evidence.meta import KEY_FINGERPRINT, get_meta

PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 500


def open_store(tmp_path, key_name="k.key"):
    cfg = EvidenceConfig(dir=str(tmp_path / "ev"), key_file=str(tmp_path / key_name))
    alarms = Alarms()
    return EvidenceStore(cfg, alarms, "st1"), alarms


def rec(seq):
    return InspectionRecord(station_id="st1", boot_id="b1", seq=seq, t_trigger_ns=seq, wall_time=time.time(),
                            verdict="FAIL", rule="anomaly", score=1.0)


def replace_key(path):
    """Another key in the same file, as an admin restoring 'a' key from the wrong backup would leave it."""
    other = generate_key(path.with_name("other.key"))
    path.write_text(other.read_text())
    path.chmod(0o600)
    return key_fingerprint(load_key(path))


def test_a_key_readable_by_other_users_is_refused_with_the_fix(tmp_path):
    key = generate_key(tmp_path / "k.key")
    key.chmod(0o644)
    with pytest.raises(KeyRefused, match=r"mode 0644 lets other users read or replace the evidence key; run `chmod 600"):
        open_store(tmp_path)
    key.chmod(0o600)
    ev, alarms = open_store(tmp_path)
    assert ev.vault is not None and not alarms.is_active("evidence_key")


def test_a_replaced_key_is_refused_at_start_and_the_buffer_is_left_as_it_was(tmp_path):
    key = generate_key(tmp_path / "k.key")
    original = key.read_text()
    ev, _ = open_store(tmp_path)
    rid = ev.record(rec(1), PNG, PNG)
    first = ev.vault.fingerprint
    assert get_meta(ev.db, KEY_FINGERPRINT) == first  # kept beside the records
    ev.close()
    new_fp = replace_key(key)
    with pytest.raises(KeyRefused) as err:
        open_store(tmp_path)
    msg = str(err.value)
    assert str(key) in msg and new_fp in msg and first in msg  # names the file and both keys
    assert "Restore the original key file" in msg and "move" in msg and "aside" in msg  # and what to do
    key.write_text(original)  # the right key back: everything reads again
    ev, _ = open_store(tmp_path)
    assert ev.read_image(ev.get(rid).crop_file) == PNG


def test_a_buffer_from_before_fingerprints_refuses_a_key_its_images_do_not_decrypt_with(tmp_path):
    dst = tmp_path / "ev"
    shutil.copytree(ROOT / "tests" / "fixtures" / "evidence_v0", dst)
    key = dst / "evidence.key"
    key.chmod(0o600)
    replace_key(key)
    cfg = EvidenceConfig(dir=str(dst), key_file=str(key))
    with pytest.raises(KeyRefused, match="none of its newest 3 images decrypts"):
        EvidenceStore(cfg, Alarms(), "legacy-line")
    shutil.copy(ROOT / "tests" / "fixtures" / "evidence_v0" / "evidence.key", key)  # its own key: taken, remembered
    key.chmod(0o600)
    ev = EvidenceStore(cfg, Alarms(), "legacy-line")
    assert get_meta(ev.db, KEY_FINGERPRINT) == ev.vault.fingerprint


def test_a_key_file_changed_while_the_station_runs_is_alarmed_and_nothing_becomes_unreadable(tmp_path):
    key = generate_key(tmp_path / "k.key")
    original = key.read_text()
    ev, alarms = open_store(tmp_path)
    replace_key(key)
    ev.key_watch.check()  # what the housekeeper does every second
    assert alarms.is_active("evidence_key_changed")
    text = next(a.message for a in alarms.active() if a.name == "evidence_key_changed")
    assert str(key) in text and "still written with the key the station started with" in text
    rid = ev.record(rec(2), PNG, None)
    assert ev.read_image(ev.get(rid).crop_file) == PNG  # still one key in the buffer
    key.write_text(original)
    ev.key_watch.check()
    assert not alarms.is_active("evidence_key_changed")


def test_a_station_with_a_replaced_key_does_not_start_and_says_why(tmp_path, make_config):
    from serving.station.runtime import Station

    cfg = make_config(max_frames=3)
    st = Station(cfg).start()
    assert st.wait(30)
    st.stop()
    replace_key(tmp_path / "evidence.key")
    with pytest.raises(ConfigError, match="not the key the evidence"):
        Station(cfg)
    (tmp_path / "station.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    out = subprocess.run([sys.executable, "-m", "serving.cli", "run", "--config", str(tmp_path / "station.yaml")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2 and "evidence.key_file" in out.stderr and "Traceback" not in out.stderr


@pytest.fixture()
def served(make_config):
    from serving.api import create_app
    from serving.station.runtime import Station

    st = Station(make_config()).start()
    assert st.wait(30)
    yield st, TestClient(create_app(st), raise_server_exceptions=False)
    st.stop()


def test_an_image_that_cannot_be_decrypted_is_a_410_naming_the_record_not_a_500(served):
    st, client = served
    r = client.post("/api/login", json={"username": "olga", "password": "op-pass"})
    h = {"Authorization": f"Bearer {r.json()['token']}"}
    with_images = [x for x in st.evidence.query(limit=100) if x.crop_file and x.overlay_file]
    a, b = with_images[:2]
    assert client.get(f"/api/evidence/{a.id}/crop.png", headers=h).status_code == 200
    path = st.evidence.img_dir / a.crop_file
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1  # altered, or written under another key: the same to AES-GCM
    path.write_bytes(bytes(raw))
    bad = client.get(f"/api/evidence/{a.id}/crop.png", headers=h)
    assert bad.status_code == 410 and f"record {a.id}" in bad.json()["detail"]
    assert "cannot be decrypted with this station's key" in bad.json()["detail"]
    (st.evidence.img_dir / b.overlay_file).unlink()
    gone = client.get(f"/api/evidence/{b.id}/overlay.png", headers=h)
    assert gone.status_code == 410 and "gone" in gone.json()["detail"]
