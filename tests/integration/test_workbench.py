"""The engineer's workbench: reports, versioned bundles, predict, compare, and errors that are one clear line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.cli import main as lineguard
from helpers import ROOT

pytestmark = pytest.mark.slow
SHOTS = ROOT / "docs" / "screenshots"


def run(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=600)


@pytest.fixture(scope="module")
def params_file(tmp_path_factory):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["model"].update(input_size=128, batch_size=8)
    p["export"]["parity_images"] = 4
    p["tracking"]["enabled"] = False
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


@pytest.fixture(scope="module")
def bottle_bundle(small_bottle, params_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("wb") / "bundle"
    assert lineguard(["--params", str(params_file), "enroll", "--data", str(small_bottle), "--out", str(out),
                      "--roi", "0,0,900,900"]) == 0
    return out


def test_evaluate_writes_a_self_contained_html_report(bottle_bundle, small_bottle, params_file, tmp_path):
    report = tmp_path / "report"
    out = run("--params", str(params_file), "evaluate", "--bundle", str(bottle_bundle), "--data", str(small_bottle),
              "--report", str(report), "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)  # stdout stays pure JSON
    page = (report / "index.html").read_text()
    for section in ("Scores", "ROC and precision-recall", "By defect type", "Escapes and false rejects"):
        assert section in page
    assert "expected false-reject rate" in page and "http" not in page.split("<body>")[1]  # nothing fetched
    assert page.count("95 % interval") == 3  # the promised FRR's, the AUROC's and the escape rate's
    misses = r["counts"]["good_fail"] + r["counts"]["defect_pass"]
    assert page.count("<figure>") == misses and page.count("data:image/") == misses + 2
    shot_of(report / "index.html", SHOTS / "evaluation-report.png")


def shot_of(html: Path, png: Path) -> None:
    """A screenshot of a local page in Debian's Chromium, for the README."""
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian chromium is missing: `apt-get install chromium` (scripts/test.sh installs it)")
    png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--hide-scrollbars", f"--screenshot={png}", "--window-size=1200,1400", html.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert png.stat().st_size > 10_000


def test_a_bundle_is_never_overwritten_without_force(bottle_bundle, small_bottle, params_file):
    out = run("--params", str(params_file), "enroll", "--data", str(small_bottle), "--out", str(bottle_bundle))
    assert out.returncode == 2 and "already holds a bundle; pass --force" in out.stderr
    assert "Traceback" not in out.stderr


def test_predict_writes_annotated_images_and_a_csv(bottle_bundle, small_bottle, tmp_path):
    out = run("predict", "--bundle", str(bottle_bundle), "--images", str(small_bottle / "test"), "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = (tmp_path / "predictions.csv").read_text().splitlines()
    assert lines[0] == "file,verdict,rule,score,area_px,annotated" and len(lines) == 1 + 12
    assert (tmp_path / "broken_large").is_dir() and len(list(tmp_path.rglob("*.png"))) == 12


def test_compare_two_bundles(bottle_bundle, small_bottle, params_file, tmp_path):
    other = tmp_path / "b2"
    assert lineguard(["--params", str(params_file), "enroll", "--data", str(small_bottle), "--out", str(other),
                      "--roi", "0,0,900,900", "calibration.target_frr=0.05"]) == 0
    out = run("compare", str(bottle_bundle), str(other), "--data", str(small_bottle), "--out", str(tmp_path / "cmp"))
    assert out.returncode == 0, out.stderr
    assert "image AUROC" in out.stdout and "threshold" in out.stdout and "verdicts that differ" in out.stdout
    assert "image AUROC B - A" in out.stdout and "exact McNemar" in out.stdout  # beyond chance, or not
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert summary["goods"]["only_b_right"] == 0  # B's 5 % target rejects more goods, never fewer
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 5000


def test_replay_writes_overlays_of_escapes_too(bottle_bundle, small_bottle, tmp_path):
    out = subprocess.run([sys.executable, "-m", "serving.cli", "replay", "--bundle", str(bottle_bundle), "--images",
                          str(small_bottle / "test"), "--overlays", str(tmp_path), "--station-config",
                          str(_strict_station(tmp_path, bottle_bundle, small_bottle))], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert list(tmp_path.glob("*_escape_*.png"))  # the gate passed defects (SOP bypass): their pictures are kept


def _strict_station(tmp, bundle, data):
    cfg = {"station_id": "x", "bundle": str(bundle), "source": {"kind": "replay", "path": str(data / "test")},
           "gate": {"sop": [{"name": "bypass", "action": "pass_all"}]}, "bundles": {"allow_unsigned": True}}
    p = tmp / "station.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.parametrize("argv, message", [
    (["enroll", "--data", "{data}", "--out", "{tmp}/b", "--roi=-5,0,100,100"], "x and y must be >= 0"),
    (["enroll", "--data", "{data}", "--out", "{tmp}/b", "--roi", "0,0,20,20"], "20x20 px would be enlarged"),
    (["enroll", "--data", "{data}", "--out", "{tmp}/b", "model.imput_size=256"], "did you mean 'model.input_size'"),
    (["evaluate", "--bundle", "{tmp}/no-such-bundle", "--data", "{data}"], "no such bundle folder; check --bundle"),
    (["--params", "{tmp}/broken.yaml", "enroll", "--data", "{data}", "--out", "{tmp}/b"],
     "broken.yaml: not valid YAML: line 3, column 1"),
    (["--params", "{tmp}/nope.yaml", "enroll", "--data", "{data}", "--out", "{tmp}/b"], "parameters file not found"),
])
def test_bad_arguments_are_one_clear_line_before_anything_heavy(argv, message, small_bottle, tmp_path):
    (tmp_path / "broken.yaml").write_text("model:\n  input_size: [224\n")
    argv = [a.format(data=small_bottle, tmp=tmp_path) for a in argv]
    code = ("import sys; from flows.cli import main; rc = main(sys.argv[1:]); "
            "print('HEAVY', sorted(m for m in ('torch', 'anomalib', 'timm') if m in sys.modules)); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert "HEAVY []" in out.stdout  # refused before torch and anomalib were imported


def test_outside_the_project_it_says_so_and_leaves_no_state_behind(tmp_path, small_bottle):
    out = run("enroll", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "b"), cwd=tmp_path,
              env={"HOME": str(tmp_path / "home"), "LINEGUARD_HOME": ""})
    assert out.returncode == 2
    assert "no params.yaml" in out.stderr and "using built-in defaults" in out.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name != "home"] == []  # nothing created where the user stands


def test_version_and_progress_without_a_terminal(small_bottle, params_file, tmp_path):
    v = run("--version")
    assert v.returncode == 0 and v.stdout.startswith("lineguard ") and "bundle schema" in v.stdout
    out = run("--params", str(params_file), "enroll", "--data", str(small_bottle), "--out", str(tmp_path / "b"),
              "--no-export")
    assert out.returncode == 0, out.stderr
    assert "embed: " in out.stderr and "\r" not in out.stderr  # plain lines in a log, no bar redraws
