"""The ELPV split: seeded, the same train cells whatever the test list's length, and 'every cell left'."""

from flows.data.prepare import elpv_root, prepare_elpv, read_labels


def _names(root, sub):
    return {p.name for p in (root / sub).glob("*.png")}


def test_every_cell_left_keeps_the_train_cells_and_takes_the_rest(tmp_path):
    short = prepare_elpv(tmp_path / "short", n_train=30, n_test_good=10, n_test_defect=10)
    full = prepare_elpv(tmp_path / "full", n_train=30, n_test_good=None, n_test_defect=None)
    probs = [p for _, p, kind in read_labels(elpv_root()) if kind == "mono"]
    assert _names(full, "train/good") == _names(short, "train/good")
    assert len(_names(full, "test/good")) == sum(p == 0.0 for p in probs) - 30
    assert len(_names(full, "test/defect")) == sum(p == 1.0 for p in probs)
    assert _names(short, "test/good") <= _names(full, "test/good")
    assert not _names(full, "train/good") & _names(full, "test/good")
