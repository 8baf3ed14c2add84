"""The learned mask decoder on ONNX Runtime, as the backbone's trunk is (``--runtime``).

What runs on ONNX Runtime is :class:`~icm_cli.predict.decoder.MaskDecoder`'s
own forward, exported from the loaded module and weights: the in-context
maps, canvas, levels and prototypes in, the logit out. Everything around it
(the maps' assembly, the sigmoid, a prior's blend, the window) stays in torch.

The export is cached beside the backbone's (``onnx/`` in the cache folder,
:func:`~icm_cli.backbones.onnx_trunk.cached_export`), keyed by a digest of
the decoder's weights, its config, the icm version and the torch, onnx and
onnxruntime versions; it is checked against torch when made, at two canvas
sizes (one not the size it was traced on: the spatial sizes are dynamic), and
its bytes against their SHA-256 whenever read.

Threads: a call computes on as many threads as torch would in the calling
thread (``torch.get_num_threads()``): one in each of the stream's finishing
threads, which call it concurrently (``InferenceSession.run`` is thread-safe),
all of them for a library call. One session per thread count, made on first
use.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from icm_cli.backbones.onnx_trunk import (INSTALL_HINT, OPSET, cached_export, missing_packages, open_session,
                                          runtime_versions, traced_onnx, weights_digest)
from icm_cli.errors import RuntimeUnavailable
from icm_cli.predict.decoder import MAP_CHANNELS, MaskDecoder

FORMAT = "icm-onnx-decoder-1"
#: Largest |onnx - torch| logit accepted on the check inputs, relative to the largest |torch| logit
#: (measured: about 1e-6; a wrong graph is off by O(1)).
TOLERANCE = 1e-4
#: Feature grids (stride 8) the export is traced on and checked at: a second, other size and aspect
#: shows that the spatial sizes really are dynamic.
TRACE_GRID = (6, 8)
CHECK_GRIDS = ((6, 8), (5, 11))


def input_names(model: MaskDecoder) -> list[str]:
    """The graph's inputs, in order: maps, canvas, then level and prototypes per stride, then the prior."""
    names = ["maps", "canvas"]
    for s in sorted(model.config.strides, reverse=True):
        names += [f"level{s}", f"proto{s}"]
    return names + (["prior", "prior_given"] if model.config.prior else [])


#: ONNX Runtime computes a convolution in its blocked layout (NCHWc, blocks of 8 or 16 channels: AVX2 or
#: AVX-512) only when its input channels fill whole blocks. Measured on the built-in decoder (a 704x384
#: canvas, one thread): its 55-channel stride-4 convolution took 8 ms in the plain layout, the 32-channel
#: one after it 2.2 ms in the blocked one; padded to 64 channels, the whole network went from 18.7 to 14.8 ms.
CHANNEL_BLOCK = 16


class _ChannelPadded(torch.nn.Module):
    """``conv`` on its input followed by zero channels up to a multiple of :data:`CHANNEL_BLOCK`, with zero
    weights for them: the same sums (a zero times a zero added), in the layout ONNX Runtime runs fastest."""

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        super().__init__()
        self.extra = -conv.in_channels % CHANNEL_BLOCK
        self.conv = copy.deepcopy(conv)
        weight = conv.weight.detach()
        self.conv.weight = torch.nn.Parameter(torch.cat(
            [weight, weight.new_zeros(weight.shape[0], self.extra, *weight.shape[2:])], dim=1), requires_grad=False)
        self.conv.in_channels += self.extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 0, 0, 0, 0, self.extra)))


def _for_export(model: MaskDecoder) -> MaskDecoder:
    """A copy of ``model`` computing the same numbers, with its wide convolutions' inputs padded to whole
    channel blocks (:class:`_ChannelPadded`); ``model`` itself is left as it is."""
    out = copy.deepcopy(model).eval()
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if (isinstance(child, torch.nn.Conv2d) and child.groups == 1 and child.kernel_size != (1, 1)
                    and child.in_channels > CHANNEL_BLOCK
                    and child.in_channels % CHANNEL_BLOCK):
                setattr(parent, name, _ChannelPadded(child))
    return out


class _DecoderGraph(torch.nn.Module):
    """What is exported: the decoder's forward with its dict inputs spread into named tensors."""

    def __init__(self, model: MaskDecoder) -> None:
        super().__init__()
        self.model = model
        self.strides = sorted(model.config.strides, reverse=True)

    def forward(self, maps, canvas, *rest):
        levels = {s: rest[2 * i] for i, s in enumerate(self.strides)}
        protos = {s: rest[2 * i + 1] for i, s in enumerate(self.strides)}
        extra = rest[2 * len(self.strides):]
        prior, given = (extra[0], extra[1]) if extra else (None, None)
        return self.model(maps, canvas, levels, protos, prior=prior, prior_given=given)


def check_inputs(model: MaskDecoder, grid: tuple[int, int], seed: int = 1234) -> tuple[torch.Tensor, ...]:
    """Seeded inputs of the graph (see :func:`input_names`) for a ``grid`` = (h, w) stride-8 grid, batch 1;
    the prior is given (a random half of the cells) where the decoder reads one."""
    g = torch.Generator().manual_seed(seed)
    h, w = grid
    dims = dict(model.config.level_dims)
    out = [torch.rand(1, len(MAP_CHANNELS), h, w, generator=g), torch.rand(1, 3, 8 * h, 8 * w, generator=g)]
    for s in sorted(model.config.strides, reverse=True):
        out += [torch.randn(1, dims[s], 8 * h // s, 8 * w // s, generator=g),
                F.normalize(torch.randn(1, 2, dims[s], generator=g), dim=-1)]
    if model.config.prior:
        out += [(torch.rand(1, 1, 2 * h, 2 * w, generator=g) > 0.5).float(), torch.ones(1)]
    return tuple(out)


def export_bytes(model: MaskDecoder) -> bytes:
    """``model`` as an ONNX model (opset 17, any batch, any canvas of 8h x 8w for an h x w map grid)."""
    names = input_names(model)
    axes = {"maps": {0: "batch", 2: "h8", 3: "w8"}, "canvas": {0: "batch", 2: "h1", 3: "w1"},
            "logit": {0: "batch", 2: "h_out", 3: "w_out"}}
    for s in model.config.strides:
        axes[f"level{s}"] = {0: "batch", 2: f"h{s}", 3: f"w{s}"}
        axes[f"proto{s}"] = {0: "batch"}
    if model.config.prior:
        axes.update({"prior": {0: "batch", 2: "h4", 3: "w4"}, "prior_given": {0: "batch"}})
    return traced_onnx(model, _DecoderGraph(_for_export(model)).eval(), check_inputs(model, TRACE_GRID), names,
                       ["logit"], axes)


class OnnxDecoder:
    """A :class:`MaskDecoder` on ONNX Runtime, called as the module is:
    ``(maps, canvas, levels, protos, prior=None) -> logit``; thread-safe.

    Inputs whose grids the export cannot take (for an h x w map grid, a canvas other than 8h x 8w or a
    stride-s level other than 8h/s x 8w/s; the pipeline never makes one) are decoded by the torch module.
    """

    def __init__(self, model: MaskDecoder, data: bytes | Path, path: Path | None = None, exported: bool = False,
                 max_abs_diff: float = float("nan")) -> None:
        self.model = model
        self.config = model.config
        self.data = data
        self.path = path
        self.exported = exported  # this process made the export (False: read from the cache)
        self.max_abs_diff = max_abs_diff
        self._sessions: dict[int, object] = {}
        self._lock = threading.Lock()

    def session(self, threads: int | None = None):
        """The session computing on ``threads`` (default: torch's thread count here), made once."""
        threads = max(1, threads or torch.get_num_threads())
        found = self._sessions.get(threads)
        if found is None:
            with self._lock:
                found = self._sessions.get(threads)
                if found is None:
                    found = self._sessions[threads] = open_session(self.data, threads)
        return found

    def feed(self, maps, canvas, levels, protos, prior=None) -> dict[str, np.ndarray] | None:
        """The graph's inputs as arrays, or None where the export cannot take these grids."""
        h, w = maps.shape[-2:]
        if tuple(canvas.shape[-2:]) != (8 * h, 8 * w) or any(
                tuple(levels[s].shape[-2:]) != (8 * h // s, 8 * w // s) for s in self.config.strides):
            return None
        arrays = [maps, canvas]
        for s in sorted(self.config.strides, reverse=True):
            arrays += [levels[s], protos[s]]
        if self.config.prior:
            b = maps.shape[0]
            if prior is None:  # what the module does without a prior: an empty one, flagged absent
                arrays += [torch.zeros(b, 1, 2 * h, 2 * w), torch.zeros(b)]
            else:
                arrays += [prior, torch.ones(b)]
        return {name: np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())
                for name, t in zip(input_names(self.model), arrays)}

    def __call__(self, maps, canvas, levels, protos, prior=None) -> torch.Tensor:
        feed = self.feed(maps, canvas, levels, protos, prior)
        if feed is None:
            with torch.no_grad():
                return self.model(maps, canvas, levels, protos, prior=prior)
        return torch.from_numpy(self.session().run(None, feed)[0])


def compare(model: MaskDecoder, decoder: OnnxDecoder) -> float:
    """Largest |onnx - torch| logit on :func:`check_inputs` at each of :data:`CHECK_GRIDS` (with and, for a
    decoder that reads priors, without a prior), relative to the largest |torch| logit."""
    worst = 0.0
    names = input_names(model)
    for grid in CHECK_GRIDS:
        inputs = check_inputs(model, grid)
        cases = [inputs] + ([inputs[:-2] + (torch.zeros_like(inputs[-2]), torch.zeros(1))] if model.config.prior else [])
        for case in cases:
            with torch.no_grad():
                ref = _DecoderGraph(model)(*case)
            got = torch.from_numpy(decoder.session(1).run(None, {n: t.numpy() for n, t in zip(names, case)})[0])
            if got.shape != ref.shape:
                return float("inf")
            worst = max(worst, float((got - ref).abs().max()) / max(1.0, float(ref.abs().max())))
    return worst


def cache_key(model: MaskDecoder) -> dict:
    """Everything an export depends on; its digest names the cache entry."""
    from icm_cli import __version__

    return {"format": FORMAT, "config": model.config.to_json(), "weights": weights_digest(model), "icm": __version__,
            "opset": OPSET, **runtime_versions()}


def _export_checked(model: MaskDecoder) -> tuple[bytes, OnnxDecoder, float]:
    if missing_packages(("onnx",)):
        raise RuntimeUnavailable(f"exporting the decoder to ONNX needs the onnx package ({INSTALL_HINT})")
    try:
        data = export_bytes(model)
        decoder = OnnxDecoder(model, data, exported=True)
        decoder.max_abs_diff = compare(model, decoder)
    except Exception as exc:
        raise RuntimeUnavailable(f"exporting the decoder to ONNX failed ({str(exc).splitlines()[0][:120]})") from None
    if not decoder.max_abs_diff <= TOLERANCE:
        raise RuntimeUnavailable(f"the decoder's ONNX export differs from torch by {decoder.max_abs_diff:.2g} "
                                 f"(more than {TOLERANCE:g})")
    return data, decoder, decoder.max_abs_diff


def load_decoder(model: MaskDecoder) -> OnnxDecoder:
    """``model`` on ONNX Runtime: from the cache, or exported, checked and cached now. Raises
    :class:`RuntimeUnavailable` when it cannot be made or does not match torch."""
    if missing_packages():
        raise RuntimeUnavailable(f"onnxruntime is not installed ({INSTALL_HINT})")

    def open_model(path: Path, meta: dict) -> OnnxDecoder:
        decoder = OnnxDecoder(model, path.read_bytes(), path, False, float(meta.get("max_abs_diff", "nan")))
        # A model ONNX Runtime refuses is rebuilt, not found broken later; one thread is what the stream's
        # finishing threads run it on.
        decoder.session(1)
        return decoder

    decoder, path, _ = cached_export("decoder", "decoder.onnx", cache_key(model), open_model,
                                    lambda: _export_checked(model))
    decoder.path = path
    return decoder


__all__ = ["OnnxDecoder", "TOLERANCE", "cache_key", "check_inputs", "compare", "export_bytes", "input_names",
           "load_decoder"]
