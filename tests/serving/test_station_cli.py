"""``lineguard-station verify`` and ``replay``."""

import subprocess
import sys


def station(*args):
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True, text=True)


def test_verify_ok_and_refuses_tampering(bundle_copy):
    ok = station("verify", str(bundle_copy))
    assert ok.returncode == 0 and "files verified" in ok.stdout
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
