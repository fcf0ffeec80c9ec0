"""`dvc repro` runs prepare -> enroll -> export -> evaluate with params.yaml, and caches."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT

pytestmark = pytest.mark.slow


def test_dvc_repro_on_the_embedded_default(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("dvc.yaml",):
        shutil.copy(ROOT / name, proj / name)
    for pkg in ("flows", "serving"):
        shutil.copytree(ROOT / pkg, proj / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["elpv"].update(n_train=30, n_test_good=6, n_test_defect=6)
    params["model"]["input_size"] = 128
    params["tracking"]["enabled"] = False
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}

    def run(*cmd):
        r = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r.stdout

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    run("dvc", "config", "core.site_cache_dir", ".dvc/site-cache")
    out = run("dvc", "repro")
    for stage in ("prepare", "enroll", "export", "evaluate"):
        assert f"Running stage '{stage}'" in out
    metrics = json.loads((proj / "metrics" / "elpv.json").read_text())
    assert metrics["n_good"] == 6 and metrics["n_defect"] == 6 and metrics["image_auroc"] is not None
    assert (proj / "dvc.lock").is_file()
    again = run("dvc", "repro")
    assert "Running stage" not in again and "up to date" in again
    # a parameter change reruns only what depends on it
    params["export"]["parity_images"] = 3
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    partial = run("dvc", "repro")
    assert "Running stage 'export'" in partial and "Running stage 'enroll'" not in partial
