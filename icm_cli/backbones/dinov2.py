"""DINOv2 ViT-S/B/L/G through Hugging Face ``transformers`` (optional extra).

Install with ``pip install transformers safetensors`` (``".[dinov2]"`` in the icm checkout). ``transformers`` is imported
only when a DINOv2 backbone is built, never when ``icm`` starts.

Where the weights come from (``weights`` / ``--weights``):

- ``None``: the Hugging Face cache (``~/.cache/huggingface/hub``, or
  ``HF_HUB_CACHE``); when the model is not cached and the Hub answers, it is
  downloaded there (``config.json`` and ``model.safetensors`` only). Offline
  with nothing cached, :class:`WeightsError` says what to download.
- a folder: what ``model.save_pretrained(DIR)`` or
  ``hf download facebook/dinov2-small config.json model.safetensors --local-dir DIR``
  writes: ``config.json`` plus ``model.safetensors`` (preferred),
  ``pytorch_model.bin`` or a sharded index. The folder's ``config.json``
  decides the architecture, so ``dinov2-small`` with a ViT-B folder gives a
  ViT-B. ``dinov2_with_registers`` folders work too (register tokens are
  dropped like the CLS token).
- a single file in Hugging Face format (``.safetensors`` preferred;
  ``.bin``/``.pth`` are read with ``torch.load(weights_only=True)``): the
  architecture comes from a ``config.json`` beside it, else from the
  standard configuration of the named variant. Checkpoints of the original
  ``facebookresearch/dinov2`` repository (``blocks.0.attn.qkv...``) are not
  in that format and are refused with a pointer to the Hub download.

Nothing is ever unpickled with code execution: safetensors are plain data,
pickles go through ``weights_only`` loading (in our loader and in
``transformers``), and remote code is never trusted.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pickle
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from icm_cli.backbones.base import Backbone, Features, imagenet_normalise, l2_normalise
from icm_cli.backbones.weights import WeightsError, load_state_dict
from icm_cli.errors import IcmRuntimeError, SettingError

# name -> (Hub id, architecture of the standard checkpoint)
_COMMON = dict(patch_size=14, image_size=518, mlp_ratio=4, layerscale_value=1.0,
               layer_norm_eps=1e-6, qkv_bias=True)
VARIANTS: dict[str, tuple[str, dict]] = {
    "dinov2-small": ("facebook/dinov2-small",
                     dict(_COMMON, hidden_size=384, num_hidden_layers=12, num_attention_heads=6)),
    "dinov2-base": ("facebook/dinov2-base",
                    dict(_COMMON, hidden_size=768, num_hidden_layers=12, num_attention_heads=12)),
    "dinov2-large": ("facebook/dinov2-large",
                     dict(_COMMON, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16)),
    "dinov2-giant": ("facebook/dinov2-giant",
                     dict(_COMMON, hidden_size=1536, num_hidden_layers=40, num_attention_heads=24,
                          use_swiglu_ffn=True)),
}
PIP_HINT = 'pip install transformers safetensors (or ".[dinov2]" in the icm checkout)'
# Weight files of a save_pretrained folder, most preferred first.
_FOLDER_FILES = ("model.safetensors", "model.safetensors.index.json",
                 "pytorch_model.bin", "pytorch_model.bin.index.json")
_MODEL_TYPES = ("dinov2", "dinov2_with_registers")


def hub_id(variant: str) -> str:
    return VARIANTS[variant][0]


def download_hint(variant: str) -> str:
    """What to run on a machine that is online, and how to point icm at it."""
    return (f"download with: hf download {hub_id(variant)} config.json model.safetensors "
            f"--local-dir DIR, then pass --weights DIR")


def transformers_installed() -> bool:
    return importlib.util.find_spec("transformers") is not None


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise WeightsError(f"the DINOv2 backbones need Hugging Face transformers: {PIP_HINT}") from None
    return transformers


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _load_error(exc: BaseException, source: Path, what: str) -> WeightsError:
    """One line for a failed ``from_pretrained``; ``what`` names the expected architecture."""
    line = _first_line(exc)
    weights = _folder_weights(source) if source.is_dir() else source
    if "mismatched" in line or "size mismatch" in line:
        return WeightsError(f"{source}: tensor sizes do not match {what}")
    if weights is not None and weights.suffix == ".safetensors":
        return WeightsError(f"{weights}: not a readable safetensors file ({line})")
    if (isinstance(exc, pickle.UnpicklingError) or "weights only load failed" in line.lower()
            or (weights is not None and weights.suffix in (".bin", ".pth", ".pt"))):
        return WeightsError(f"{weights}: refused: not a plain-tensor PyTorch file (corrupt, or it holds "
                            f"code that torch.load(weights_only=True) will not run); use model.safetensors")
    return WeightsError(f"{source}: could not load the DINOv2 weights ({line})")


def _folder_weights(folder: Path) -> Path | None:
    """The weights file (or shard index) ``from_pretrained`` would read in ``folder``."""
    for name in _FOLDER_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def cached_snapshot(variant: str, cache_dir: str | Path | None = None) -> Path | None:
    """Folder of the variant in the Hugging Face cache, when it holds config and weights.

    Looks only at the disk; never touches the network.
    """
    if importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import try_to_load_from_cache
    try:
        config = try_to_load_from_cache(hub_id(variant), "config.json", cache_dir=cache_dir)
    except Exception:  # a malformed cache is the same as no cache here
        return None
    if not isinstance(config, str):
        return None
    folder = Path(config).parent
    return folder if _folder_weights(folder) else None


def _safetensors_keys(path: Path) -> list[str] | None:
    """Tensor names from a safetensors header (the tensors are not read), or None."""
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception:
        return None


def weights_status(variant: str, weights: str | Path | None,
                   cache_dir: str | Path | None = None) -> tuple[bool, str]:
    """(usable here, reason) without importing transformers or reading weights."""
    if not transformers_installed():
        return False, f"needs: {PIP_HINT}"
    if weights:
        path = Path(weights)
        if path.is_dir():
            if not (path / "config.json").is_file():
                return False, f"{path}: no config.json (not a save_pretrained folder)"
            if _folder_weights(path) is None:
                return False, f"{path}: no model.safetensors or pytorch_model.bin"
            return True, f"weights: {path}"
        if path.is_file():
            if path.suffix == ".safetensors":
                keys = _safetensors_keys(path)
                if keys is None:
                    return False, f"{path}: not a readable safetensors file"
                if not any("patch_embeddings" in k for k in keys):
                    return False, f"{path}: holds no DINOv2 (Hugging Face format) tensors"
                return True, f"weights: {path}"
            return True, f"weights: {path} (contents checked when loaded)"
        return False, f"{path}: not found"
    snapshot = cached_snapshot(variant, cache_dir)
    if snapshot is not None:
        return True, f"weights: Hugging Face cache ({hub_id(variant)})"
    return False, f"needs weights: {download_hint(variant)} (or run once online)"


@contextlib.contextmanager
def _quiet(transformers):
    """Silence transformers' warnings and 'Loading weights' bars while loading from disk."""
    log = transformers.utils.logging
    verbosity = log.get_verbosity()
    bars = log.is_progress_bar_enabled()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        yield
    finally:
        log.set_verbosity(verbosity)
        if bars:
            log.enable_progress_bar()


def _model_class(transformers, model_type: str, source: str):
    if model_type == "dinov2":
        return transformers.Dinov2Config, transformers.Dinov2Model
    if model_type == "dinov2_with_registers":
        return transformers.Dinov2WithRegistersConfig, transformers.Dinov2WithRegistersModel
    raise WeightsError(f"{source}: config.json describes a {model_type or 'unknown'!s} model, "
                       f"not DINOv2 (model_type must be one of {', '.join(_MODEL_TYPES)})")


def _read_config(transformers, config_file: Path):
    """A DINOv2 config object from a ``config.json`` (never trusting remote code)."""
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{config_file}: not a readable config.json ({_first_line(exc)})") from None
    if not isinstance(raw, dict):
        raise WeightsError(f"{config_file}: not a readable config.json (not a JSON object)")
    config_cls, _ = _model_class(transformers, raw.get("model_type", ""), str(config_file))
    try:
        return config_cls.from_json_file(str(config_file))
    except Exception as exc:
        raise WeightsError(f"{config_file}: not a usable DINOv2 config ({_first_line(exc)})") from None


def _check_loaded(model, info: dict, source: str):
    missing = [k for k in info.get("missing_keys", ()) if not k.endswith("mask_token")]
    mismatched = list(info.get("mismatched_keys", ()))
    if missing or mismatched:
        raise WeightsError(f"{source}: does not match its DINOv2 config "
                           f"({len(missing)} missing, {len(mismatched)} mismatched tensors)")
    return model


def _load_folder(transformers, folder: Path):
    """``from_pretrained`` on a local save_pretrained folder, errors as one line."""
    config = _read_config(transformers, folder / "config.json")
    _, model_cls = _model_class(transformers, config.model_type, str(folder))
    try:
        with _quiet(transformers):
            model, info = model_cls.from_pretrained(str(folder), config=config, local_files_only=True,
                                                    output_loading_info=True)
    except WeightsError:
        raise
    except Exception as exc:
        raise _load_error(exc, folder, "its config.json") from None
    return _check_loaded(model, info, str(folder))


def _load_file(transformers, variant: str, path: Path):
    """One Hugging Face-format state dict file, with config.json beside it or the variant's."""
    if path.name in ("model.safetensors", "pytorch_model.bin") and (path.parent / "config.json").is_file():
        return _load_folder(transformers, path.parent)
    if (path.parent / "config.json").is_file():
        config = _read_config(transformers, path.parent / "config.json")
        what = f"{path.parent / 'config.json'}"
    else:
        config = transformers.Dinov2Config(**VARIANTS[variant][1])
        what = (f"the standard {variant} architecture (no config.json beside the file; "
                f"put the model's config.json next to it)")
    try:
        state = load_state_dict(path)
    except WeightsError:
        raise
    except Exception as exc:  # junk can make the unpickler fail in any way (IndexError, KeyError...)
        raise _load_error(exc, path, "a PyTorch state dict") from None
    if any(k.startswith("blocks.") or ".attn.qkv." in k for k in state):
        raise WeightsError(f"{path}: this is an original facebookresearch/dinov2 checkpoint; icm reads "
                           f"the Hugging Face format: {download_hint(variant)}")
    _, model_cls = _model_class(transformers, config.model_type, str(path))
    try:
        with _quiet(transformers):
            model, info = model_cls.from_pretrained(None, config=config, state_dict=state,
                                                    output_loading_info=True)
    except Exception as exc:
        raise _load_error(exc, path, what) from None
    return _check_loaded(model, info, str(path))


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub's host answers a TCP connection (fails fast offline,
    instead of transformers' minute of retries). Behind a proxy we cannot
    tell, so we let the download try."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _download(variant: str, cache_dir: str | Path | None) -> Path:
    """Fetch config and weights of ``variant`` into the Hugging Face cache; its folder."""
    from huggingface_hub import snapshot_download
    try:
        folder = Path(snapshot_download(hub_id(variant), cache_dir=cache_dir,
                                        allow_patterns=["config.json", "*.safetensors",
                                                        "model.safetensors.index.json"]))
        if _folder_weights(folder) is None:  # repositories without safetensors
            folder = Path(snapshot_download(hub_id(variant), cache_dir=cache_dir,
                                            allow_patterns=["config.json", "pytorch_model.bin*"]))
    except Exception as exc:
        raise WeightsError(f"{variant}: downloading {hub_id(variant)} failed ({_first_line(exc)}); "
                           f"{download_hint(variant)}") from None
    return folder


def load_dinov2_model(variant: str, weights: str | Path | None = None, *,
                      cache_dir: str | Path | None = None,
                      allow_download: bool = True) -> tuple[torch.nn.Module, str]:
    """The Hugging Face DINOv2 model (CPU, eval) and a description of its source.

    Raises :class:`WeightsError` (one line) when transformers is missing or
    the weights cannot be found or read.
    """
    if variant not in VARIANTS:
        raise WeightsError(f"unknown DINOv2 variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    transformers = _import_transformers()
    if weights is not None and str(weights) != "":
        path = Path(weights).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise WeightsError(f"{path}: no config.json here; --weights takes a save_pretrained "
                                   f"folder ({download_hint(variant)})")
            if _folder_weights(path) is None:
                raise WeightsError(f"{path}: no model.safetensors or pytorch_model.bin here; "
                                   f"{download_hint(variant)}")
            return _load_folder(transformers, path).eval(), str(path)
        if path.is_file():
            return _load_file(transformers, variant, path).eval(), str(path)
        raise WeightsError(f"{path}: weights folder not found; {download_hint(variant)}")
    snapshot = cached_snapshot(variant, cache_dir)
    if snapshot is None:
        if not (allow_download and _hub_reachable()):
            raise WeightsError(f"{variant}: not in the Hugging Face cache and the Hub is not reachable; "
                               f"{download_hint(variant)}")
        snapshot = _download(variant, cache_dir)
    return _load_folder(transformers, snapshot).eval(), f"Hugging Face cache ({hub_id(variant)})"


def _query_key(layer: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The query and key projections of a DINOv2 layer (transformers 5 or 4 names)."""
    att = layer.attention
    if hasattr(att, "q_proj"):
        return att.q_proj, att.k_proj
    inner = getattr(att, "attention", None)
    if inner is not None and hasattr(inner, "query"):
        return inner.query, inner.key
    raise IcmRuntimeError("unsupported transformers DINOv2 layout: no query/key projections found")


class DinoV2(Backbone):
    """DINOv2 patch features and last-layer self-attention.

    ``forward``: ``[B, 3, H, W]`` RGB in [0, 1] (H, W multiples of the patch
    size, 14) -> ``Features(ft=[B, C, H/14, W/14], attn={(H/14, W/14):
    [B, H/14, W/14, (H/14)*(W/14)]})``.

    ``ft`` is the last layer's (layer-normed) patch tokens, L2-normalised.
    ``attn`` is ``softmax(Q Kᵀ / sqrt(d))`` of the last ``attention_layers``
    layers, recomputed from the captured layer inputs (so the network keeps
    its fast fused attention kernel and only one layer's maps are ever
    held), with the CLS and register tokens dropped from rows and columns,
    heads and layers averaged, and rows re-normalised to sum to 1.
    Positional embeddings are interpolated by transformers for any H x W.
    """

    stride = 14
    multiple = 14
    default_size = 448

    def __init__(self, variant: str = "dinov2-small", weights: str | Path | None = None,
                 attention_layers: int = 1, cache_dir: str | Path | None = None,
                 allow_download: bool = True) -> None:
        super().__init__()
        model, source = load_dinov2_model(variant, weights, cache_dir=cache_dir,
                                          allow_download=allow_download)
        config = model.config
        layers = model.encoder.layer
        if not 1 <= attention_layers <= len(layers):
            raise SettingError(f"attention_layers must be between 1 and {len(layers)}, got {attention_layers}")
        patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
        self.model = model
        self.name = variant
        self.weights_path = source
        self.stride = patch
        self.multiple = patch
        self.feature_dim = int(config.hidden_size)
        self.num_heads = int(config.num_attention_heads)
        self.num_prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.attention_layers = attention_layers
        _query_key(layers[-1])  # fail at build time, not mid-batch, on an unknown layout
        self.eval()

    def _layer_attention(self, layer: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden``: ``[B, N, C]`` input of ``layer`` -> ``[B, n, n]`` head-summed
        patch-to-patch attention (``n = N - prefix``), float32."""
        b, n_tok, _ = hidden.shape
        q_lin, k_lin = _query_key(layer)
        normed = layer.norm1(hidden)
        q = q_lin(normed).view(b, n_tok, self.num_heads, -1).transpose(1, 2).float()  # [B, h, N, d]
        k = k_lin(normed).view(b, n_tok, self.num_heads, -1).transpose(1, 2).float()
        scale = q.shape[-1] ** -0.5
        p = self.num_prefix
        total = hidden.new_zeros((b, n_tok - p, n_tok - p), dtype=torch.float32)
        for head in range(self.num_heads):  # one [B, N, N] map at a time
            probs = (torch.matmul(q[:, head], k[:, head].transpose(-1, -2)) * scale).softmax(dim=-1)
            total += probs[:, p:, p:]
        return total

    def forward(self, images: torch.Tensor, with_attention: bool = True) -> Features:
        b, _, h, w = images.shape
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"input sides must be multiples of {self.multiple}, got {h}x{w}")
        gh, gw = h // self.multiple, w // self.multiple
        dtype = next(self.model.parameters()).dtype
        pixels = imagenet_normalise(images.float()).to(dtype)
        layers = list(self.model.encoder.layer[-self.attention_layers:]) if with_attention else []
        captured: list[torch.Tensor] = []

        def capture(module, args, kwargs):
            captured.append(args[0] if args else kwargs["hidden_states"])

        hooks = [layer.register_forward_pre_hook(capture, with_kwargs=True) for layer in layers]
        try:
            out = self.model(pixel_values=pixels)
        finally:
            for hook in hooks:
                hook.remove()
        tokens = out.last_hidden_state  # [B, prefix + gh*gw, C]
        patches = tokens[:, self.num_prefix:, :].float()
        ft = l2_normalise(patches.transpose(1, 2).reshape(b, -1, gh, gw))
        attn = {}
        if with_attention:
            total = sum(self._layer_attention(layer, hidden) for layer, hidden in zip(layers, captured))
            total = total / total.sum(dim=-1, keepdim=True).clamp_min(1e-12)
            attn[(gh, gw)] = total.reshape(b, gh, gw, gh * gw)
        return Features(ft=ft, attn=attn, stride=self.stride)
