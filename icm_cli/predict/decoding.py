"""The learned mask decoder of a run: which weights decode, and the decoding of one source's evidence."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from icm_cli.predict.context import ReferenceContext, to_tensor
from icm_cli.predict.decoder import MaskDecoder, decoder_maps, load_decoder, resolve_decoder, resolve_prior_decoder
from icm_cli.predict.evidence import Evidence


class Decoders:
    """The decoder ``--decoder`` names for a backbone and, with a prior mask, the one that reads it.

    decoder: None for ``--decoder none``; prior_decoder: the decoder used when the evidence carries a prior
    (the built-in pair: see ``BUILTIN_PRIOR``), None when none reads priors.
    """

    def __init__(self, name: str, backbone, device: torch.device) -> None:
        self.device = device
        self.decoder: MaskDecoder | None = None
        path = resolve_decoder(name, getattr(backbone, "name", ""))
        if path is not None:
            if not hasattr(backbone, "levels"):
                from icm_cli.backbones.weights import WeightsError
                raise WeightsError(f"the decoder needs a backbone with fine levels (EfficientNet-Lite), "
                                   f"not {getattr(backbone, 'name', 'this one')}; use --decoder none")
            self.decoder = load_decoder(path).to(device)
        self.prior_decoder: MaskDecoder | None = None
        prior_path = resolve_prior_decoder(name, getattr(backbone, "name", "")) if path else None
        if prior_path is not None:
            model = self.decoder if prior_path == path else load_decoder(prior_path).to(device)
            self.prior_decoder = model if model.config.prior else None
        #: What runs the decoders ("torch" or "onnx": see :meth:`use_runtime`).
        self.runtime = "torch"
        self._runs: dict[int, object] = {}  # id(module) -> what runs it, where not the module itself

    def use_runtime(self, runtime: str) -> str | None:
        """Run the decoders on ``runtime``, the backbone's (``"onnx"``: ONNX Runtime, from the cached export
        of :mod:`~icm_cli.predict.decoder_onnx`; only on the CPU). Returns why they stay on torch where the
        export cannot be made or does not match torch (said once, by the caller), else None."""
        self._runs, self.runtime = {}, "torch"
        if runtime != "onnx" or self.decoder is None or self.device.type != "cpu":
            return None
        from icm_cli.errors import RuntimeUnavailable
        from icm_cli.predict import decoder_onnx

        runs = {}
        try:
            for model in (self.decoder, self.prior_decoder):
                if model is not None and id(model) not in runs:
                    runs[id(model)] = decoder_onnx.load_decoder(model)
        except RuntimeUnavailable as exc:
            return f"the learned decoder runs on torch: {exc}"
        self._runs, self.runtime = runs, "onnx"
        return None

    def _run(self, model: MaskDecoder):
        return self._runs.get(id(model), model)

    @property
    def reads_priors(self) -> bool:
        """Whether a loaded decoder reads a prior mask (video, refinement, ``--prior``)."""
        return self.prior_decoder is not None

    def strides(self) -> tuple[int, ...] | None:
        """The backbone levels the decoders read, or None without a decoder."""
        if self.decoder is None:
            return None
        return tuple(sorted(set(self.decoder.config.strides) | set(
            self.prior_decoder.config.strides if self.prior_decoder is not None else ())))

    def decodes(self, evidence: Evidence, context: ReferenceContext) -> bool:
        """Whether ``evidence`` goes through the decoder: one is loaded and the evidence and context hold
        what it reads."""
        return self.decoder is not None and evidence.decodable and context.prototypes is not None

    @torch.no_grad()
    def decode(self, image: np.ndarray, evidence: Evidence, context: ReferenceContext) -> torch.Tensor:
        """The decoder's ``[1, 1, Hc/s, Wc/s]`` object probability over the canvas (s = 4 or 2)."""
        geo, dev = evidence.geometry, self.device
        canvas = (evidence.canvas if evidence.canvas is not None else geo.to_canvas(to_tensor(image))).to(dev)
        levels = {stride: lv.to(dev) for stride, lv in evidence.levels.items()}
        protos = {stride: p[None].to(dev) for stride, p in context.prototypes.items()}
        maps = decoder_maps(evidence).to(dev)
        w = evidence.prior_weight
        if evidence.prior is None or not self.reads_priors or w <= 0:
            prob = torch.sigmoid(self._run(self.decoder)(maps, canvas, levels, protos).float())
        else:
            prior = evidence.prior.to(dev)
            prob = torch.sigmoid(self._run(self.prior_decoder)(maps, canvas, levels, protos, prior=prior).float())
            if w < 1:  # the evidence alone keeps a say: a prior's errors do not carry over whole
                alone = torch.sigmoid(self._run(self.decoder)(maps, canvas, levels, protos).float())
                prob = w * prob + (1 - w) * alone
        prob = evidence.with_readout(prob)
        if evidence.window is not None:
            prob = prob * F.interpolate(evidence.window.to(prob), size=prob.shape[-2:], mode="nearest")
        return prob.cpu()
