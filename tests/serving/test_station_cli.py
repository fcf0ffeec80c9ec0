"""``lineguard-station verify``, ``replay``, ``bench``, ports and ``export-evidence``."""

import subprocess
import sys
import time

import pytest


def station(*args):
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True, text=True)


def test_verify_ok_and_refuses_tampering(bundle_copy):
    ok = station("verify", str(bundle_copy))
    assert ok.returncode == 0 and "files verified" in ok.stdout
    assert "search: index, " in ok.stdout and "above exact on the parity images" in ok.stdout
    (bundle_copy / "model.onnx").write_bytes(b"junk")
    bad = station("verify", str(bundle_copy))
    assert bad.returncode == 2
    assert "model.onnx: sha256 does not match" in bad.stderr and "Traceback" not in bad.stderr


def test_replay_prints_pass_fail_table_and_fails_safe_on_a_corrupt_frame(bundle_dir, test_images, tmp_path):
    imgs = tmp_path / "imgs"
    (imgs / "good").mkdir(parents=True)
    for p in sorted((test_images / "good").iterdir())[:2]:
        (imgs / "good" / p.name).write_bytes(p.read_bytes())
    (imgs / "good" / "zz_corrupt.png").write_bytes(b"not an image")
    out = station("replay", "--bundle", str(bundle_dir), "--images", str(imgs), "--overlays", str(tmp_path / "ov"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    corrupt = next(line for line in lines if "zz_corrupt.png" in line)
    assert "FAIL" in corrupt and "cannot decode" in corrupt  # inspection failed -> reject, with the reason
    assert "3 parts:" in out.stdout
    assert "training stack imported by the station: none" in out.stdout
    assert (imgs / "good" / "zz_corrupt.png").exists()


def test_replay_of_a_missing_folder_is_a_clear_error(bundle_dir, tmp_path):
    out = station("replay", "--bundle", str(bundle_dir), "--images", str(tmp_path / "nope"))
    assert out.returncode == 2 and "nope: no such file or folder" in out.stderr


def test_ports_come_from_flags_or_environment_and_paths_from_the_config_folder(tmp_path, make_config):
    import os
    import urllib.request

    import yaml

    from services import free_port

    cfg = make_config(max_frames=2)
    data = cfg.model_dump(mode="json")
    data["evidence"]["dir"] = "ev"  # relative: to the config file, wherever it is copied
    data["evidence"]["sync_url"] = "synced"  # a folder that does not exist yet: created, not an alarm
    copied = tmp_path / "elsewhere"
    copied.mkdir()
    (copied / "station.yaml").write_text(yaml.safe_dump(data))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "run", "--config", str(copied / "station.yaml")],
                            env={**os.environ, "LINEGUARD_API_PORT": str(port)}, stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if "replay finished" in line:
                break
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        deadline = time.monotonic() + 15
        while not list((copied / "synced" / cfg.station_id / "records").rglob("*.json")):
            assert time.monotonic() < deadline, "sync folder not created and filled"
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(15)
    assert (copied / "ev" / "evidence.db").exists()


def test_export_evidence_decrypts_records_and_pictures(tmp_path, make_config):
    from serving.station.runtime import Station

    cfg = make_config()
    st = Station(cfg).start()
    assert st.wait(30)
    st.stop()
    import yaml

    (tmp_path / "station.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    out = station("export-evidence", "--config", str(tmp_path / "station.yaml"), "--out", str(tmp_path / "x"),
                  "--verdict", "FAIL")
    assert out.returncode == 0, out.stderr
    rows = (tmp_path / "x" / "records.csv").read_text().splitlines()
    fails = st.state.counts["FAIL"]
    assert len(rows) == 1 + fails and "verdict" in rows[0]
    import csv

    pictured = [r for r in csv.DictReader(rows) if r["crop"]]  # a part that failed before its picture has none
    assert len(pictured) >= fails - 1
    pngs = list((tmp_path / "x" / "images").glob("*.png"))
    assert len(pngs) == 2 * len(pictured) and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    data = cfg.model_dump(mode="json")
    data["evidence"]["key_file"] = str(tmp_path / "missing.key")
    (tmp_path / "nokey.yaml").write_text(yaml.safe_dump(data))
    bad = station("export-evidence", "--config", str(tmp_path / "nokey.yaml"), "--out", str(tmp_path / "y"))
    assert bad.returncode == 2 and "export needs the engineer's copy of the evidence key" in bad.stderr


def test_bench_prints_the_whole_path_the_backbone_and_cold_start_without_a_training_module(bundle_dir, test_images):
    """`lineguard-station bench --json`: the documented figures, from a station's own imports."""
    import json

    code = ("import sys; from serving.cli import main; rc = main(sys.argv[1:]); "
            "print('HEAVY', [m for m in ('torch', 'anomalib', 'timm', 'mlflow', 'prefect', 'ultralytics') "
            "if m in sys.modules]); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, "bench", "--bundle", str(bundle_dir), "--images",
                          str(test_images), "--n", "8", "--cold-runs", "1", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "HEAVY []"
    r = json.loads(lines[-2])
    for key in ("p50_ms", "p99_ms", "backbone_p50_ms", "load_to_first_verdict_ms", "process_to_first_verdict_ms",
                "exact_p50_ms"):
        assert isinstance(r[key], float) and r[key] > 0, key
    assert r["search"].startswith("ivf: ")  # the index the station runs, with the exact graph beside it
    assert r["p50_ms"] <= r["p99_ms"] and r["n"] == 8 and r["batch"] == 1
    assert {"preprocess", "inference", "gate"} <= set(r["stages"])
    assert r["load_to_first_verdict_ms"] < r["process_to_first_verdict_ms"]


def test_first_verdict_from_raw_pixels_is_the_verdict_from_the_decoded_file(bundle_dir, test_images, tmp_path):
    """The cold-start child is handed the frame as raw pixels (.npy), as a camera hands them over: the same
    verdict and rule as from the PNG it came from."""
    import numpy as np

    from serving.images import read_image
    from serving.station.bench import first_verdict

    png = sorted(test_images.rglob("*.png"))[0]
    np.save(tmp_path / "frame.npy", read_image(png))
    a, b = first_verdict(bundle_dir, png), first_verdict(bundle_dir, tmp_path / "frame.npy")
    assert (a["verdict"], a["rule"]) == (b["verdict"], b["rule"])
    assert b["t_verdict_ns"] > b["t_load_ns"]


@pytest.mark.parametrize("given, expected", [(None, "1"), ("2", "2")])
def test_the_station_process_runs_numpy_blas_on_one_thread_unless_told_otherwise(given, expected):
    """Set before numpy loads (a later setting has no effect on OpenBLAS's pool); an operator's value stands."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given:
        env["OPENBLAS_NUM_THREADS"] = given
    code = ("import sys, serving.cli, os; assert 'numpy' not in sys.modules, 'numpy loaded before the setting'; "
            "print(os.environ['OPENBLAS_NUM_THREADS'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_bench_of_an_empty_folder_is_one_clear_line(bundle_dir, tmp_path):
    out = station("bench", "--bundle", str(bundle_dir), "--images", str(tmp_path), "--cold-runs", "0")
    assert out.returncode == 2 and "no images to replay" in out.stderr and "Traceback" not in out.stderr
