"""The detector's dataset: boxes from masks, a split that keeps a part's images together, and bad input that is
named (a corrupt image, an unknown class, a folder without masks) instead of training on less without a word."""

import cv2
import numpy as np
import pytest

from flows.detector.dataset import LabeledImage, build, from_mvtec, load_yolo, mask_boxes, split_by_part
from serving.errors import DatasetError


def _png(path, value=128, size=(64, 80)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), value, np.uint8))
    return path


def _items(tmp_path, n=6, classes=("crack", "dent")):
    return [LabeledImage(_png(tmp_path / "img" / f"{i}.png", 40 + i), [(classes[i % len(classes)], 4, 6, 20, 30)],
                         f"part{i}") for i in range(n)]


def test_mask_boxes_are_the_connected_components_and_an_empty_mask_has_none():
    m = np.zeros((40, 40), np.uint8)
    m[2:5, 3:9] = 1
    m[20:30, 20:22] = 255
    assert sorted(mask_boxes(m)) == [(3, 2, 9, 5), (20, 20, 22, 30)]
    assert mask_boxes(np.zeros((8, 8), np.uint8)) == []


def test_split_keeps_every_image_of_a_part_on_one_side():
    items = [LabeledImage(f"{p}-{k}.png", [("crack", 0, 0, 1, 1)], f"p{p}") for p in range(12) for k in range(3)]
    train, val = split_by_part(items, 1 / 3, seed=0)
    assert {i.part_id for i in train}.isdisjoint({i.part_id for i in val})
    assert len({i.part_id for i in val}) == 4
    assert split_by_part(items, 1 / 3, seed=0)[1] == val  # seeded: the same split every time


def test_build_writes_yolo_labels_and_names_a_corrupt_image_without_dropping_the_rest(tmp_path):
    items = _items(tmp_path)
    bad = tmp_path / "img" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    items.append(LabeledImage(bad, [("crack", 1, 1, 5, 5)], "broken"))
    info = build(items, tmp_path / "yolo", classes=["crack", "dent"], val_fraction=0.0, real_repeat=1)
    assert len(info.unreadable) == 1 and "broken.png" in info.unreadable[0]
    assert info.n_train == 6 and sum(c["train"] for c in info.counts.values()) == 6
    line = (tmp_path / "yolo" / "train" / "labels" / "part0.txt").read_text().split()
    assert line[0] == "0" and [float(v) for v in line[1:]] == pytest.approx([12 / 80, 18 / 64, 16 / 80, 24 / 64])


def test_a_yolo_folder_with_a_corrupt_image_is_refused_with_its_name(tmp_path):
    build(_items(tmp_path), tmp_path / "yolo", classes=["crack", "dent"], val_fraction=0.5, real_repeat=1)
    victim = next((tmp_path / "yolo" / "val" / "images").glob("*.png"))
    victim.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=rf"(?s)1 unreadable image.*{victim.name}: cannot decode.*nothing was trained"):
        load_yolo(tmp_path / "yolo")


def test_unknown_classes_no_boxes_and_no_masks_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"classes \['dent'\] that are not in the class list \['crack'\]"):
        build(_items(tmp_path), tmp_path / "y1", classes=["crack"])
    with pytest.raises(DatasetError, match="no labeled defects with boxes"):
        build([LabeledImage(tmp_path / "img" / "0.png", [], "p0")], tmp_path / "y2")
    (tmp_path / "mvtec" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no ground_truth/ masks"):
        from_mvtec(tmp_path / "mvtec")
    with pytest.raises(DatasetError, match="no data.yaml"):
        load_yolo(tmp_path / "mvtec")


def test_copy_paste_labels_each_pasted_box_with_its_own_class_and_skips_an_unreadable_good(tmp_path):
    from flows.detector.dataset import synthesize

    img = np.full((64, 80, 3), 128, np.uint8)
    img[10:30, 5:25] = 200  # the crack
    img[30:50, 50:70] = 40  # the dent, relabeled by a labeler on the same part
    src = tmp_path / "part.png"
    cv2.imwrite(str(src), img)
    item = LabeledImage(src, [("crack", 5, 10, 25, 30), ("dent", 50, 30, 70, 50)], "p0")
    goods = [_png(tmp_path / "good" / f"g{i}.png") for i in range(3)]
    (tmp_path / "good" / "bad.png").write_bytes(b"not a png")
    out = tmp_path / "yolo"
    for s in ("images", "labels"):
        (out / "train" / s).mkdir(parents=True)
    n = synthesize([item], [*goods, tmp_path / "good" / "bad.png"], 4, out, ["crack", "dent"], seed=0, rotate=False)
    assert n == 12  # 3 readable goods x 4; the unreadable one is skipped, not fatal
    seen = set()
    for lab in (out / "train" / "labels").glob("syn_*.txt"):
        pic = cv2.imread(str(out / "train" / "images" / f"{lab.stem}.png"))[:, :, ::-1]
        for line in lab.read_text().splitlines():
            c, x, y, _, _ = line.split()
            value = pic[int(float(y) * 64), int(float(x) * 80), 0]
            assert value == (200 if c == "0" else 40), (lab.name, line)  # the class of what was pasted there
            seen.add(c)
    assert seen == {"0", "1"}
