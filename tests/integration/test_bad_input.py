"""Bad input to enrollment: a clear error naming the file or field, and nothing lost."""

import shutil
from pathlib import Path

import pytest

from helpers import ROOT, fast_params
from flows.cli import main as lineguard
from flows.anomaly.enroll import enroll
from serving.errors import ConfigError, DatasetError, RoiError


def make_set(tmp_path, src: Path, n_train=12, defects=0, masks=False) -> Path:
    root = tmp_path / "set"
    (root / "train" / "good").mkdir(parents=True)
    good = sorted((src / "train" / "good").iterdir())
    for p in good[:n_train]:
        shutil.copy(p, root / "train" / "good" / p.name)
    if defects:
        (root / "test" / "defect").mkdir(parents=True)
        for p in sorted((src / "test" / "defect").iterdir())[:defects]:
            shutil.copy(p, root / "test" / "defect" / p.name)
        if masks:
            (root / "ground_truth" / "defect").mkdir(parents=True)
    return root


@pytest.fixture()
def params():
    return fast_params().model_copy(update={"enroll": fast_params().enroll.model_copy(update={"min_good_images": 10})})


def test_missing_folder(tmp_path, params):
    with pytest.raises(DatasetError, match="nope: folder not found; expected MVTec AD layout"):
        enroll(tmp_path / "nope", params, tmp_path / "b")


def test_empty_train_folder(tmp_path, params):
    (tmp_path / "set" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images .* in the train/good folder"):
        enroll(tmp_path / "set", params, tmp_path / "b")


def test_too_few_good_images(tmp_path, small_elpv, params):
    root = make_set(tmp_path, small_elpv, n_train=5)
    with pytest.raises(DatasetError, match="5 good images, at least 10 needed"):
        enroll(root, params, tmp_path / "b")


def test_corrupt_image_stops_with_its_name_unless_skipped(tmp_path, small_elpv, params, capsys):
    root = make_set(tmp_path, small_elpv, n_train=20)
    bad = root / "train" / "good" / "zz_truncated.png"
    bad.write_bytes((root / "train" / "good").iterdir().__next__().read_bytes()[:100])
    with pytest.raises(DatasetError, match=r"(?s)zz_truncated\.png.*--skip-corrupt"):
        enroll(root, params, tmp_path / "b")
    assert bad.exists()  # never deleted
    pfile = tmp_path / "p.yaml"
    pfile.write_text(params_yaml(min_good=10))
    rc = lineguard(["--params", str(pfile), "enroll", "--data", str(root), "--out", str(tmp_path / "b"),
                    "--skip-corrupt", "--no-track", "--no-export"])
    assert rc == 0
    assert "skipped (corrupt):" in capsys.readouterr().out
    assert bad.exists()


def test_mask_without_image_and_image_without_mask(tmp_path, small_bottle, params):
    root = tmp_path / "b"
    shutil.copytree(small_bottle, root, symlinks=True)
    masks = root / "ground_truth" / "broken_large"
    stray = masks / "999_mask.png"
    stray.write_bytes(next(masks.iterdir()).read_bytes())
    with pytest.raises(DatasetError, match="999_mask.png: mask without an image"):
        enroll(root, params, tmp_path / "out")
    stray.unlink()
    first = sorted(masks.iterdir())[0]
    first.unlink()
    with pytest.raises(DatasetError, match="image\\(s\\) without a mask"):
        enroll(root, params, tmp_path / "out")


def test_unknown_backbone(tmp_path, small_elpv, params):
    p = params.model_copy(update={"model": params.model.model_copy(update={"backbone": "resnet_9000"})})
    with pytest.raises(ConfigError, match="backbone 'resnet_9000' is not a timm model"):
        enroll(small_elpv, p, tmp_path / "b")


def test_roi_outside_the_image(tmp_path, small_elpv, params):
    p = params.model_copy(update={"model": params.model.model_copy(update={"roi": "100,100,400,400"})})
    with pytest.raises(RoiError, match=r"cell\d+\.png: roi .* outside the 300x300 image"):
        enroll(small_elpv, p, tmp_path / "b")


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    rc = lineguard(["enroll", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "b"), "--no-track"])
    err = capsys.readouterr().err
    assert rc == 2 and "missing: folder not found" in err and "Traceback" not in err


def params_yaml(min_good: int) -> str:
    text = (ROOT / "params.yaml").read_text()
    return (text.replace("min_good_images: 20", f"min_good_images: {min_good}")
                .replace("input_size: 224", "input_size: 128")
                .replace("enabled: true", "enabled: false"))




def test_unknown_layer_names_the_field_and_the_choices(tmp_path, small_elpv, params):
    p = params.model_copy(update={"model": params.model.model_copy(update={"layers": ["blocks.2", "blocks.3"]})})
    with pytest.raises(ConfigError, match=r"model.layers .*'blocks.3'.*choose from .*'blocks.4'"):
        enroll(small_elpv, p, tmp_path / "b")
