"""Pre/post-processing shared by station and pipeline (numpy only)."""

import numpy as np
import pytest

from serving.errors import ImageError, RoiError
from serving.images import read_image, to_rgb
from serving.engine.preprocess import InputSpec, Roi, anomaly_area, crop_roi, heatmap_overlay, normalize, preprocess


@pytest.mark.parametrize(
    "frame",
    [np.zeros((6, 7), np.uint8), np.zeros((6, 7, 1), np.uint8), np.zeros((6, 7, 3), np.uint8),
     np.zeros((6, 7, 4), np.uint8), np.zeros((6, 7), np.uint16)],
)
def test_to_rgb_accepts_gray_rgb_rgba_and_16bit(frame):
    out = to_rgb(frame)
    assert out.shape == (6, 7, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("frame", [np.zeros((6, 7, 2), np.uint8), np.zeros((6,), np.uint8), np.zeros((0, 0), np.uint8),
                                   np.zeros((6, 7, 3), np.float64)])
def test_to_rgb_refuses_non_images_naming_the_source(frame):
    with pytest.raises(ImageError, match="cam0"):
        to_rgb(frame, source="cam0")


def test_bgr_flag_swaps_channels():
    f = np.zeros((1, 1, 3), np.uint8)
    f[0, 0] = (1, 2, 3)
    assert to_rgb(f, bgr=True)[0, 0].tolist() == [3, 2, 1]


def test_preprocess_normalises_crops_and_resizes():
    img = np.zeros((40, 60, 3), np.uint8)
    img[10:20, 30:50] = 255
    x = preprocess(img, InputSpec(height=8, width=16), Roi(x=30, y=10, w=20, h=10))
    assert x.shape == (3, 8, 16) and x.dtype == np.float32
    assert np.allclose(x, 1.0)  # 255 -> (1 - 0.5) / 0.5
    assert np.allclose(preprocess(np.zeros((4, 4, 3), np.uint8), InputSpec(height=4, width=4)), -1.0)


def test_normalise_applies_each_channels_own_mean_and_std():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    spec = InputSpec(height=5, width=7, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x = normalize(crop, spec)
    want = (crop.astype(np.float64) / 255.0 - np.array(spec.mean)) / np.array(spec.std)
    assert x.shape == (3, 5, 7) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    assert np.allclose(x, want.transpose(2, 0, 1), atol=1e-5)


def test_roi_outside_the_image_names_the_source_and_the_fix():
    with pytest.raises(RoiError, match=r"part\.png.*outside the 10x10 image"):
        crop_roi(np.zeros((10, 10, 3), np.uint8), Roi(x=5, y=5, w=10, h=2), source="part.png")
    with pytest.raises(RoiError, match="four integers"):
        Roi.parse("1,2,3")
    assert Roi.parse("1,2,3,4") == Roi(x=1, y=2, w=3, h=4) and Roi.parse(None) is None


def test_anomaly_area_is_in_source_pixels():
    amap = np.zeros((10, 10), np.float32)
    amap[:2, :5] = 2.0  # 10 of 100 cells above threshold
    assert anomaly_area(amap, 1.0, roi_px=1000) == pytest.approx(100.0)


def test_heatmap_overlay_shape_and_fixed_scale():
    crop = np.zeros((32, 32, 3), np.uint8)
    cold = heatmap_overlay(crop, np.zeros((8, 8), np.float32), 1.0)
    hot = heatmap_overlay(crop, np.full((8, 8), 5.0, np.float32), 1.0)
    assert cold.shape == (32, 32, 3)
    assert hot[..., 0].mean() > cold[..., 0].mean()  # red where the map is hot


def test_read_image_corrupt_and_empty_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageError, match="broken.png.*cannot decode"):
        read_image(bad)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg.*empty"):
        read_image(empty)
    assert bad.exists() and empty.exists()  # nothing is deleted
