"""Recalibration with the wrong inputs: a clear line that names the problem, and nothing lost or half-written."""

import json
import os
import shutil

import pytest
import torch

from flows.cli import main as lineguard
from flows.drift.scenarios import elpv_split
from helpers import require_bottle

pytestmark = pytest.mark.slow


def folder(tmp_path, name, paths):
    good = tmp_path / name / "good"
    good.mkdir(parents=True)
    for p in paths:
        os.symlink(p, good / p.name)
    return good.parent


def recal(bundle, normals, out, *extra):
    return lineguard(["recalibrate", "--bundle", str(bundle), "--normals", str(normals), "--out", str(out), "--json",
                      "tracking.enabled=false", *extra])


@pytest.fixture(scope="module")
def split():
    return elpv_split(n_enroll=100, seed=0)


def test_too_few_new_normals_are_refused(bundle_dir, split, tmp_path, capsys):
    normals = folder(tmp_path, "few", split.held_out[:5])
    assert recal(bundle_dir, normals, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert str(normals) in err and "5 new normals; at least 20" in err
    assert not (tmp_path / "out").exists()


def test_defects_among_new_normals_are_listed_and_left_out_unless_confirmed(bundle_dir, split, tmp_path, capsys):
    defects = split.defects[:3]
    normals = folder(tmp_path, "mixed", [*split.held_out[:24], *defects])
    assert recal(bundle_dir, normals, tmp_path / "a") == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out.strip().splitlines()[-1])
    flagged = {os.path.basename(f) for f in out["flagged"]}
    assert flagged and flagged <= {d.name for d in defects}, flagged
    assert out["n_new_normals"] == 27 - len(flagged) and "look like defects" in cap.err and "--include-flagged" in cap.err
    assert recal(bundle_dir, normals, tmp_path / "b", "--include-flagged") == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n_new_normals"] == 27


def test_normals_of_an_unrelated_product_get_a_rebuild_warning(bundle_dir, tmp_path, capsys):
    bottle = require_bottle()
    normals = folder(tmp_path, "bottle", sorted((bottle / "train" / "good").iterdir())[:24])
    assert recal(bundle_dir, normals, tmp_path / "out") == 0
    cap = capsys.readouterr()
    assert "far from the old ones" in cap.err and "would be rejected" in cap.err and "--mode rebuild" in cap.err
    assert json.loads(cap.out.strip().splitlines()[-1])["frr_new_before"] > 0.5


def test_a_bundle_enrolled_before_schema_2_or_without_its_enrollment_is_refused(bundle_dir, split, tmp_path, capsys):
    normals = folder(tmp_path, "n", split.held_out[:24])
    old = tmp_path / "old"
    shutil.copytree(bundle_dir, old)
    ckpt = torch.load(old / "enrollment.pt", weights_only=False)
    ckpt["format"] = 1
    ckpt.pop("pooled")
    torch.save(ckpt, old / "enrollment.pt")
    assert recal(old, normals, tmp_path / "o1") == 2
    assert "--mode rebuild" in capsys.readouterr().err
    assert lineguard(["export", "--bundle", str(old)]) == 2  # an old enrollment is named, not a pydantic traceback
    assert "written by an earlier lineguard (enrollment format 1, this one needs 2); re-enroll" in capsys.readouterr().err
    (old / "enrollment.pt").unlink()
    assert recal(old, normals, tmp_path / "o2") == 2
    assert "no enrollment.pt" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_rebuild_re_enrolls_old_and_new_and_says_where_the_old_came_from(bundle_dir, split, tmp_path, capsys):
    from flows.anomaly.enroll import load_enrollment

    ckpt = load_enrollment(bundle_dir)
    assert ckpt["params"]["model"]["input_size"] == 128
    normals = folder(tmp_path, "n", split.held_out[:24])
    wrong_old = folder(tmp_path, "old", split.held_out[100:125])  # 25 cells, not the bundle's 30
    (wrong_old / "train").mkdir()
    (wrong_old / "good").rename(wrong_old / "train" / "good")
    assert recal(bundle_dir, normals, tmp_path / "r", "--mode", "rebuild", "--old-data", str(wrong_old)) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out.strip().splitlines()[-1])
    assert out["mode"] == "rebuild" and out["n_new_normals"] == 24
    assert "rebuild read 25 old normals" in cap.err and "is --old-data the original training folder?" in cap.err
    assert out["parent_version"] and (tmp_path / "r" / "report" / "scores_before_after.png").is_file()
