"""A learned mask decoder: the in-context maps icm computes, read at stride 4.

The training-free path ends in a stride-8 object probability. The decoder
learns, as In-Context Matting does, to read the in-context evidence together
with finer image features, and predicts the object at a finer grid:

- **in-context maps** on the stride-8 grid (``MAP_CHANNELS``): the propagator's
  fused probability, the nearest-neighbour contrast, the object head, ICM's
  inter (cross-attention) and intra (after self-attention) heat, and the
  top-k similarities to the object and to the background side;
- **similarity to the reference at fine scales**: cosine similarity of the
  stride-4 (and stride-2) activations to the reference's object and
  background prototypes (activations averaged under / outside its mask);
- **low-level image evidence** for edges: the backbone's stride-4 (and
  stride-2) activations and the RGB image pooled to those grids.

It never sees the 344-d semantic features themselves: every input is either
a similarity to the reference or low-level, so what it learns is how
evidence becomes a mask, not what a person looks like. Its output is a
residual on the propagator's own logit, so an untrained decoder reproduces the
training-free probability (upsampled).

Shapes: maps ``[B, M, h, w]`` (M = len(MAP_CHANNELS)), canvas ``[B, 3, 8h, 8w]``
in [0, 1], levels ``{2: [B, C2, 4h, 4w], 4: [B, C4, 2h, 2w]}``, prototypes
``{s: [B, 2, C_s]}`` (object, background; L2-normalised) -> logits
``[B, 1, 8h / s_out, 8w / s_out]``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from icm_cli.backbones.base import imagenet_normalise
from icm_cli.backbones.weights import WeightsError, load_state_dict
from icm_cli.predict import DEFAULT_DECODER  # noqa: F401  (re-exported)

MAP_CHANNELS = ("prob", "nearest", "head", "inter", "intra", "sim_fg", "sim_bg")
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "weights"
BUILTIN = {"efficientnet-lite0": BUILTIN_DIR / "decoder-lite0.safetensors"}
#: The built-in weights that read a prior mask (video, ``icm refine``, ``--prior``); with no prior the
#: ones of :data:`BUILTIN` decode, so a run without priors is what it was before priors existed.
BUILTIN_PRIOR = {"efficientnet-lite0": BUILTIN_DIR / "decoder-prior-lite0.safetensors"}
FORMAT = "icm-decoder-1"  # the header's format tag; the config says which inputs a file reads


@dataclass(frozen=True)
class DecoderConfig:
    """Widths of the decoder's stages; ``width2 = 0``: output at stride 4, else at stride 2."""

    width8: int = 32
    width4: int = 32
    width2: int = 0
    level_dims: tuple[tuple[int, int], ...] = ((2, 16), (4, 24))  # (stride, channels) of the backbone levels
    proj: int = 16              # channels the level activations are projected to
    prior: bool = False         # reads a prior mask (and a flag saying whether one is given)

    @property
    def out_stride(self) -> int:
        return 2 if self.width2 > 0 else 4

    @property
    def strides(self) -> tuple[int, ...]:
        return (4, 2) if self.width2 > 0 else (4,)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DecoderConfig":
        raw = json.loads(text)
        raw["level_dims"] = tuple(tuple(x) for x in raw.get("level_dims", cls.level_dims))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


class ConvNormAct(nn.Sequential):
    """3x3 (optionally dilated) convolution + BatchNorm + ReLU; keeps the spatial size."""

    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _FineStage(nn.Module):
    """One finer stage: upsampled coarse features + projected level + RGB + prototype
    similarities -> features and a residual logit at this stride."""

    def __init__(self, coarse: int, level: int, proj: int, width: int, extra: int = 0) -> None:
        super().__init__()
        self.level_norm = nn.BatchNorm2d(level)
        self.level_proj = nn.Conv2d(level, proj, 1)
        self.convs = nn.Sequential(ConvNormAct(coarse + proj + 3 + 2 + extra, width), ConvNormAct(width, width))
        self.logit = nn.Conv2d(width, 1, 1)
        nn.init.zeros_(self.logit.weight)
        nn.init.zeros_(self.logit.bias)

    def forward(self, coarse: torch.Tensor, level: torch.Tensor, rgb: torch.Tensor,
                sims: torch.Tensor, extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        size = level.shape[-2:]
        up = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
        inputs = [up, F.relu(self.level_proj(self.level_norm(level))), rgb, sims]
        if extra is not None:
            inputs.append(extra)
        x = torch.cat(inputs, dim=1)
        x = self.convs(x)
        return x, self.logit(x)


def prototype_similarity(level: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of ``[B, C, H, W]`` activations to ``[B, 2, C]`` prototypes -> ``[B, 2, H, W]``."""
    unit = F.normalize(level.float(), dim=1, eps=1e-6)
    if torch.jit.is_tracing():  # for the ONNX export: the same product as a MatMul, which ONNX Runtime
        # computes several times faster than its Einsum (torch itself keeps the einsum, bit for bit)
        return torch.matmul(protos.float(), unit.flatten(2)).reshape(unit.shape[0], -1, *unit.shape[2:])
    return torch.einsum("bchw,bkc->bkhw", unit, protos.float())


def reference_prototypes(levels: dict[int, torch.Tensor], mask_canvas: torch.Tensor,
                         valid_hw: tuple[int, int]) -> dict[int, torch.Tensor]:
    """Object and background prototypes of one reference at each level's stride.

    levels ``{s: [1, C, H/s, W/s]}``; mask_canvas ``[1, 1, H, W]`` in [0, 1];
    valid_hw: the image's (height, width) inside the padded canvas. Returns
    ``{s: [2, C]}``: area-weighted means of the L2-normalised activations
    under the mask and outside it (inside the image), each L2-normalised.
    """
    out = {}
    for s, lv in levels.items():
        grid = lv.shape[-2:]
        area = F.adaptive_avg_pool2d(mask_canvas.float().to(lv.device), grid)[0, 0]
        valid = torch.zeros(grid, device=lv.device)
        valid[: max(1, -(-valid_hw[0] // s)), : max(1, -(-valid_hw[1] // s))] = 1.0
        feats = F.normalize(lv[0].float(), dim=0, eps=1e-6).flatten(1)  # [C, n]
        w_fg = (area * valid).flatten()
        w_bg = ((1 - area) * valid).flatten()
        fg = feats @ w_fg / w_fg.sum().clamp_min(1e-6)
        bg = feats @ w_bg / w_bg.sum().clamp_min(1e-6)
        out[s] = F.normalize(torch.stack([fg, bg]), dim=1, eps=1e-6)
    return out


def combine_prototypes(items: list[dict[int, torch.Tensor]]) -> dict[int, torch.Tensor]:
    """Several references' prototypes -> one set (mean, re-normalised)."""
    return {s: F.normalize(torch.stack([p[s] for p in items]).mean(0), dim=-1, eps=1e-6) for s in items[0]}


def decoder_maps(evidence) -> torch.Tensor:
    """``[B, len(MAP_CHANNELS), h, w]``: the in-context maps the decoder reads from an
    :class:`~icm_cli.predict.evidence.Evidence` that holds decoder inputs (``base``).

    Without a head its channel repeats the nearest-neighbour map (as
    :func:`maps_without_head` makes it in training); without attention maps
    the inter heat is 1 everywhere and the intra channel repeats it.
    """
    base = evidence.base
    inter = evidence.inter if evidence.inter is not None else torch.ones_like(base)
    by_name = {"prob": base, "nearest": evidence.nearest,
               "head": evidence.head if evidence.head is not None else evidence.nearest,
               "inter": inter, "intra": evidence.intra if evidence.intra is not None else inter,
               "sim_fg": evidence.sim_fg, "sim_bg": evidence.sim_bg}
    return torch.cat([by_name[name].float() for name in MAP_CHANNELS], dim=1)


def maps_without_head(maps: torch.Tensor, intra_gate: float) -> torch.Tensor:
    """``[B, M, h, w]`` maps of a run with an object head -> the maps the propagator makes without one:
    the head channel repeats the nearest-neighbour contrast and the fused probability is that
    contrast gated by the intra heat (``intra_gate`` as in the propagator's settings).
    Training shows some episodes this way so that ``--head-steps 0`` is served too."""
    i = {n: k for k, n in enumerate(MAP_CHANNELS)}
    out = maps.clone()
    nearest = maps[:, i["nearest"]]
    out[:, i["head"]] = nearest
    gate = (maps[:, i["intra"]] / intra_gate).clamp(max=1.0) if intra_gate > 0 else 1.0
    out[:, i["prob"]] = nearest * gate
    return out


def _pool_to_grid(x: torch.Tensor, grid) -> torch.Tensor:
    """``x`` averaged onto ``grid``. The stride-4 grid is exactly twice the stride-8 one (canvases are
    multiples of 32), so when traced for the ONNX export, which cannot take an output size known only at
    run time, this is a 2x2 average pool: the same numbers (:mod:`~icm_cli.predict.decoder_onnx` runs
    only such sizes)."""
    if torch.jit.is_tracing():
        return F.avg_pool2d(x, 2)
    return F.adaptive_avg_pool2d(x, grid)


def _pooled_rgb(rgb: torch.Tensor, stride: int, normalise: bool) -> torch.Tensor:
    """``rgb`` averaged over ``stride`` x ``stride`` cells, then ImageNet-normalised when ``normalise``.
    Traced for the ONNX export the canvas is averaged first and normalised after (the same numbers but
    for rounding, on 1/stride^2 of the pixels: a few ms less per image); torch normalises the canvas
    once, before, bit for bit as it always has."""
    pooled = F.avg_pool2d(rgb, stride)
    return imagenet_normalise(pooled) if normalise else pooled


def base_logit(prob: torch.Tensor) -> torch.Tensor:
    return torch.logit(prob.float().clamp(1e-4, 1 - 1e-4))


class MaskDecoder(nn.Module):
    """The decoder network; see the module docstring for inputs and output."""

    def __init__(self, config: DecoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DecoderConfig()
        dims = dict(config.level_dims)
        m = len(MAP_CHANNELS)
        self.map_norm = nn.BatchNorm2d(m)
        prior = 2 if config.prior else 0  # the prior's share of each cell, and the flag
        self.coarse = nn.Sequential(ConvNormAct(m + prior, config.width8),
                                    ConvNormAct(config.width8, config.width8, 2),
                                    ConvNormAct(config.width8, config.width8, 4),
                                    ConvNormAct(config.width8, config.width8))
        self.stage4 = _FineStage(config.width8, dims[4], config.proj, config.width4, extra=prior)
        self.stage2 = _FineStage(config.width4, dims[2], config.proj, config.width2) if config.width2 > 0 else None

    def forward(self, maps: torch.Tensor, canvas: torch.Tensor, levels: dict[int, torch.Tensor],
                protos: dict[int, torch.Tensor], prior: torch.Tensor | None = None,
                prior_given: torch.Tensor | None = None) -> torch.Tensor:
        """See the module docstring; prior: ``[B, 1, 8h/4, 8w/4]`` object share of each stride-4
        cell of the canvas (read only by a decoder built with ``prior``), prior_given: ``[B]``
        1 where a prior is given (default: all when ``prior`` is given, none otherwise)."""
        traced = torch.jit.is_tracing()  # for the ONNX export: see _pooled_rgb
        rgb = canvas.float() if traced else imagenet_normalise(canvas.float())
        lv4 = levels[4].float()
        coarse_in, extra4 = self.map_norm(maps.float()), None
        if self.config.prior:
            b = maps.shape[0]
            if prior is None:
                prior = torch.zeros((b, 1, *lv4.shape[-2:]), device=maps.device)
                prior_given = torch.zeros(b, device=maps.device)
            elif prior_given is None:
                prior_given = torch.ones(b, device=maps.device)
            prior = prior.float() * prior_given.view(-1, 1, 1, 1).float()
            flag4 = prior_given.view(-1, 1, 1, 1).float().expand(b, 1, *lv4.shape[-2:])
            extra4 = torch.cat([prior, flag4], dim=1)
            extra8 = _pool_to_grid(extra4, maps.shape[-2:])
            coarse_in = torch.cat([coarse_in, extra8], dim=1)
        x8 = self.coarse(coarse_in)
        x4, res4 = self.stage4(x8, lv4, _pooled_rgb(rgb, 4, traced), prototype_similarity(lv4, protos[4]), extra4)
        logit = F.interpolate(base_logit(maps[:, :1]), size=lv4.shape[-2:], mode="bilinear",
                              align_corners=False) + res4
        if self.stage2 is not None:
            lv2 = levels[2].float()
            _, res2 = self.stage2(x4, lv2, _pooled_rgb(rgb, 2, traced), prototype_similarity(lv2, protos[2]))
            logit = F.interpolate(logit, size=lv2.shape[-2:], mode="bilinear", align_corners=False) + res2
        return logit


# --------------------------------------------------------------- weights

def save_decoder(model: MaskDecoder, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write the decoder as safetensors with its config (and any notes) in the header.

    Written whole to a temporary file beside ``path`` and renamed (an interrupted or failed write
    leaves an earlier file as it was), with the mode every output gets (0644 under umask 022;
    safetensors' own ``save_file`` would make it 0600). Raises OSError when it cannot be written.
    """
    from safetensors.torch import save

    from icm_cli.atomic import atomic_write

    meta = {"format": FORMAT, "config": model.config.to_json(), **(metadata or {})}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save(state, metadata=meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors header's metadata (no tensors read)."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise WeightsError(f"{path}: reading .safetensors needs the 'safetensors' package "
                           "(pip install safetensors)") from None
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None


def load_decoder(path: str | Path) -> MaskDecoder:
    """A decoder from a ``.safetensors`` file written by :func:`save_decoder` (eval mode, CPU)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: decoder weights must be a .safetensors file")
    state = load_state_dict(path)  # the one safe loader: no code runs from a weights file
    meta = read_metadata(path)
    if meta.get("format") != FORMAT or "config" not in meta:
        raise WeightsError(f"{path}: not an icm decoder (format {meta.get('format')!r})")
    try:
        model = MaskDecoder(DecoderConfig.from_json(meta["config"]))
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"{path}: does not match the decoder it describes ({first})") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def resolve_decoder(spec: str | None, backbone_name: str) -> Path | None:
    """``--decoder`` value -> weights path or None (training-free).

    ``none``: no decoder. ``auto``: the built-in weights when they exist for
    this backbone, else none. ``builtin``: the built-in weights (an error
    for a backbone they were not trained on). Anything else: a file path.
    """
    spec = (spec or "none").strip()
    if spec.lower() in ("none", "off", "0", ""):
        return None
    if spec.lower() in ("auto", "builtin"):
        path = BUILTIN.get(backbone_name)
        if path is not None and path.is_file():
            return path
        if spec.lower() == "auto":
            return None
        raise WeightsError(f"no built-in decoder for {backbone_name} (it was trained on efficientnet-lite0 "
                           "features); use --decoder none or a weights file")
    path = Path(spec)
    if not path.is_file():
        raise WeightsError(f"{path}: decoder weights file not found (--decoder takes auto, builtin, none "
                           "or a .safetensors file)")
    return path


def resolve_prior_decoder(spec: str | None, backbone_name: str) -> Path | None:
    """The weights that decode when a prior mask is given, for a ``--decoder`` value: the built-in
    prior weights for ``auto``/``builtin``, the file itself for a file (used only if it reads priors),
    None for ``none``."""
    path = resolve_decoder(spec, backbone_name)
    if path is None:
        return None
    if (spec or "").strip().lower() in ("auto", "builtin"):
        prior = BUILTIN_PRIOR.get(backbone_name)
        return prior if prior is not None and prior.is_file() else None
    return path


def describe(spec: str | None, backbone_name: str) -> str:
    """One line for `icm backbones` / logs: which decoder a setting resolves to."""
    try:
        path = resolve_decoder(spec, backbone_name)
    except WeightsError as exc:
        return f"unusable: {exc}"
    if path is None:
        return "none (training-free)"
    meta = {}
    try:
        meta = read_metadata(path)
    except WeightsError:
        pass
    what = meta.get("trained_on", "")
    return f"{path.name}" + (f" (trained on {what})" if what else "")
