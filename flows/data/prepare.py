"""Prepare the embedded demo data set: ELPV mono cells in MVTec AD layout.

ELPV (``pip install elpv-dataset``, CC BY-NC-SA 4.0) holds 2,624 real
electroluminescence images of solar cells, each with a defect probability.
Defect-free mono cells become ``train/good`` and ``test/good``; mono cells with
probability 1.0 become ``test/defect``. The copy lands under ``data/`` (git-ignored,
a DVC output), never in git.

>>> out = prepare_elpv("/tmp/elpv_doc", n_train=30, n_test_good=5, n_test_defect=5)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from pydantic import Field

from serving.strict import StrictModel


class ElpvParams(StrictModel):
    """Which ELPV cells go where."""

    cell_type: str = "mono"
    n_train: int = Field(200, gt=0)
    n_test_good: int = Field(100, gt=0)
    n_test_defect: int = Field(100, gt=0)
    seed: int = 0


def elpv_root() -> Path:
    """Folder of the installed ``elpv-dataset`` package's ``labels.csv`` and ``images/``."""
    try:
        import elpv_dataset
    except ImportError:
        raise RuntimeError("the demo data needs `pip install elpv-dataset` (the pipeline extra has it)") from None
    return Path(elpv_dataset.__file__).parent / "data"


def read_labels(root: Path) -> list[tuple[str, float, str]]:
    """(relative image path, defect probability, cell type) for every ELPV cell."""
    rows = []
    with open(root / "labels.csv") as fh:
        for line in csv.reader(fh, delimiter=" ", skipinitialspace=True):
            if line:
                rows.append((line[0], float(line[1]), line[2]))
    return rows


def prepare_elpv(out_dir: str | Path, n_train: int = 200, n_test_good: int | None = 100,
                 n_test_defect: int | None = 100, cell_type: str = "mono", seed: int = 0) -> Path:
    """Write ELPV cells of ``cell_type`` into ``out_dir`` in MVTec AD layout; return ``out_dir``.

    The split is a seeded shuffle, so the same parameters always give the same files, and a longer test list keeps
    the same train cells. ``None`` for a test count takes every cell left (every defective one, every good one not
    in train): the largest test set a bundle enrolled on the same train cells can be judged on.
    """
    root = elpv_root()
    rows = [r for r in read_labels(root) if r[2] == cell_type]
    good = [r[0] for r in rows if r[1] == 0.0]
    defect = [r[0] for r in rows if r[1] == 1.0]
    rng = np.random.default_rng(seed)
    good = [good[i] for i in rng.permutation(len(good))]
    defect = [defect[i] for i in rng.permutation(len(defect))]
    n_test_good = len(good) - n_train if n_test_good is None else n_test_good
    n_test_defect = len(defect) if n_test_defect is None else n_test_defect
    if n_train + n_test_good > len(good) or n_test_defect > len(defect):
        raise ValueError(
            f"ELPV has {len(good)} good and {len(defect)} defective {cell_type} cells; "
            f"asked for {n_train}+{n_test_good} good and {n_test_defect} defective"
        )
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    split = {
        "train/good": good[:n_train],
        "test/good": good[n_train : n_train + n_test_good],
        "test/defect": defect[:n_test_defect],
    }
    for sub, files in split.items():
        (out / sub).mkdir(parents=True)
        for rel in files:
            shutil.copyfile(root / rel, out / sub / Path(rel).name)
    (out / "SOURCE.txt").write_text(
        f"ELPV dataset (elpv-dataset package, CC BY-NC-SA 4.0), {cell_type} cells, seed {seed}.\n"
        "Buerhop-Lutz et al., 'A Benchmark for Visual Identification of Defective Solar Cells in "
        "Electroluminescence Imagery', EU PVSEC 2018. Do not commit.\n"
    )
    return out
