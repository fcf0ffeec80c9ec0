"""Typed parameters: params.yaml and overrides, errors that name the field."""

import pytest

from flows.params import load_params
from serving.errors import ConfigError
from helpers import ROOT


def test_repo_params_yaml_is_valid_and_matches_defaults_where_documented():
    p = load_params(ROOT / "params.yaml")
    assert p.model.backbone == "tf_efficientnet_lite0"
    assert p.calibration.target_frr == 0.01
    assert p.model.coreset_ratio == 0.1


def test_override_and_error_names_the_field(tmp_path):
    assert load_params(None, {"model.algorithm": "padim"}).model.algorithm == "padim"
    with pytest.raises(ConfigError, match="model.algorithm"):
        load_params(None, {"model.algorithm": "knn"})
    bad = tmp_path / "params.yaml"
    bad.write_text("calibration:\n  target_frr: 2\n")
    with pytest.raises(ConfigError, match="calibration.target_frr"):
        load_params(bad)
    bad.write_text("modle: {}\n")
    with pytest.raises(ConfigError, match="modle"):
        load_params(bad)


def test_input_size_is_a_square_side_or_w_x_h_and_a_bad_one_is_named():
    assert load_params(None, {"model.input_size": 256}).model.input_hw == (256, 256)
    assert load_params(None, {"model.input_size": "448x112"}).model.input_hw == (112, 448)
    for bad, why in (("448x16", "32-1024"), ("wide", "WxH"), (2048, "32-1024")):
        with pytest.raises(ConfigError, match=f"model.input_size.*{why}"):
            load_params(None, {"model.input_size": bad})


@pytest.mark.parametrize("product", sorted((ROOT / "products").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_product_file_is_valid_and_its_backbone_ships_offline(product):
    from flows.anomaly.backbone import PACKAGED_WEIGHTS, check_backbone

    p = load_params(ROOT / "params.yaml", {}, product)
    assert p.model.backbone in PACKAGED_WEIGHTS  # no product may need a download at enrollment
    check_backbone(p.model.backbone)
