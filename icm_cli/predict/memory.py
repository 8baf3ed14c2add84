"""A video run's memory of the frames it has segmented, and its readout (STM/STCN-style).

Each memory frame is a slot: the keys of its cells on the stride-8 feature grid
and its soft mask there (the values). Every cell of the current frame attends
to all the memory's cells (top-k softmax over key affinities) and reads out the
values where it matched: a propagated object probability that carries each
cell's label from where that cell was in the memory frames, so the object is
learned as the clip shows it, not only as the reference showed it.

Slots: the references (permanent: the user's masks), the previous frame, and
every ``every``-th frame whose mask holds the object, at most ``slots`` of them
(the oldest leaves first), so a long clip runs at constant cost and memory. A slot
also leaves once it is ``slots * every`` frames old (only while the object was gone
at the frames that would have replaced it), so what the memory holds depends only on
the last ``slots * every + 1`` frames: what a resumed run reads again.

Keys are the backbone's stride-8 features through a key projection
(:class:`KeyProjection`, a 1x1 convolution trained for correspondence by
``icm train-keys``), L2-normalised; no extra backbone pass. Pure tensor code.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from icm_cli.config import CONTRAST_TEMPERATURE


@dataclass
class Slot:
    """One memory frame: ``keys`` ``[D, N]`` (unit length) and ``values`` ``[N]`` object share in [0, 1],
    of its N valid grid cells; ``index``: its frame number (None for a reference)."""

    keys: torch.Tensor
    values: torch.Tensor
    index: int | None = None


class KeyProjection(torch.nn.Module):
    """Correspondence keys of backbone features: ``[B, C, h, w]`` -> ``[B, D, h, w]`` of unit length.

    A 1x1 convolution (``weight`` ``[D, C, 1, 1]``, ``bias`` ``[D]``) and the readout's softmax
    ``temperature``, learned together (:mod:`icm_cli.training.keys`).
    """

    def __init__(self, channels: int, dim: int = 64, temperature: float = 0.05) -> None:
        super().__init__()
        self.project = torch.nn.Conv2d(channels, dim, 1)
        self.log_temperature = torch.nn.Parameter(torch.tensor(float(temperature)).log())

    @property
    def temperature(self) -> float:
        return float(self.log_temperature.detach().exp())

    def forward(self, ft: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(ft), dim=1)


def readout(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, temperature: float,
            topk: int) -> torch.Tensor:
    """Each query cell's value read from its ``topk`` best-matching memory cells.

    query ``[D, N]``, keys ``[D, M]``, values ``[M]`` -> ``[N]``: the softmax (at ``temperature``)
    over the top-k affinities ``q . k`` weighs those cells' values.
    """
    affinity = query.T @ keys                                   # [N, M]
    k = min(topk, keys.shape[1])
    best, where = affinity.topk(k, dim=1)
    weights = ((best - best[:, :1]) / temperature).exp()        # shifted: the largest is exp(0) = 1
    return (weights * values[where]).sum(1) / weights.sum(1)


class FrameMemory:
    """The slots of one sequence and their readout.

    slots: how many admitted frames are kept besides the references and the
    previous frame (0: none); every: a frame is admitted when its number is a
    multiple of ``every`` and its mask holds the object; topk, temperature: the
    readout's (see :func:`readout`).
    """

    def __init__(self, slots: int = 4, every: int = 5, topk: int = 20,
                 temperature: float = CONTRAST_TEMPERATURE) -> None:
        self.permanent: list[Slot] = []
        self.recent: deque[Slot] = deque(maxlen=max(slots, 1))
        self.slots = slots
        self.every = max(1, every)
        self.topk = topk
        self.temperature = temperature
        self.previous: Slot | None = None

    def add_reference(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """A reference's keys ``[D, N]`` and true mask ``[N]``: kept for the whole sequence."""
        self.permanent.append(Slot(keys, values))

    def remember(self, keys: torch.Tensor, values: torch.Tensor, index: int | None, given: bool = False) -> None:
        """A finished frame (``keys`` ``[D, N]``, ``values`` ``[N]``): the previous frame from now on, and a
        slot when ``index`` is a multiple of ``every`` and the object is in it. A ``given`` frame (a
        reference among the sources) is already a permanent slot: it becomes only the previous frame."""
        self.previous = Slot(keys, values, index)
        while index is not None and self.recent and self.recent[0].index < index - self.slots * self.every:
            self.recent.popleft()  # older than a resumed run replays (VideoConfig.memory_span): it would not have it
        if given or self.slots <= 0 or index is None or index % self.every or not bool((values >= 0.5).any()):
            return
        if self.recent and self.recent[-1].index == index:
            return
        self.recent.append(Slot(keys, values, index))

    @property
    def frames(self) -> list[Slot]:
        """Every slot a readout reads: references, admitted frames, then the previous frame."""
        held = self.permanent + list(self.recent)
        if self.previous is not None and not any(s.index == self.previous.index and s.index is not None
                                                 for s in self.recent):
            held.append(self.previous)
        return held

    def read(self, query: torch.Tensor) -> torch.Tensor | None:
        """The propagated object probability ``[N]`` of a frame's query keys ``[D, N]``; None while empty."""
        held = self.frames
        if not held:
            return None
        keys = torch.cat([s.keys for s in held], 1).to(query)
        values = torch.cat([s.values for s in held]).to(query)
        return readout(query, keys, values, self.temperature, self.topk)


def keys_bytes(model: KeyProjection, metadata: dict[str, str]) -> bytes:
    """A :class:`KeyProjection` as a safetensors file's bytes (``metadata``: strings)."""
    from safetensors.torch import save

    tensors = {"weight": model.project.weight.detach().contiguous(), "bias": model.project.bias.detach().contiguous(),
               "log_temperature": model.log_temperature.detach().reshape(1).contiguous()}
    return save(tensors, metadata=metadata)


def save_keys(model: KeyProjection, path: str | Path, metadata: dict[str, str]) -> None:
    Path(path).write_bytes(keys_bytes(model, metadata))


def load_keys(path: str | Path) -> KeyProjection:
    """A :class:`KeyProjection` from a safetensors file written by :func:`save_keys`; raises
    :class:`~icm_cli.errors.IcmError` naming the file when it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from icm_cli.errors import IcmError

    try:
        tensors = load_file(str(path))
        weight, bias = tensors["weight"], tensors["bias"]
        model = KeyProjection(weight.shape[1], weight.shape[0])
        model.project.weight.data.copy_(weight)
        model.project.bias.data.copy_(bias)
        model.log_temperature.data.copy_(tensors["log_temperature"].reshape(()))
    except (OSError, KeyError, RuntimeError, ValueError, IndexError, SafetensorError) as exc:  # a bad header is its own kind
        raise IcmError(f"{path}: not a key projection file ({exc})") from exc
    return model.requires_grad_(False).eval()


#: The shipped key projection of each built-in backbone (trained by ``icm train-keys``; see README).
BUILTIN_KEYS = {"efficientnet-lite0": "keys-lite0.safetensors"}


def builtin_keys(backbone) -> KeyProjection | None:
    """The shipped key projection for ``backbone`` (by its ``name``, checked against its ``feature_dim``),
    or None: then the features themselves, unit length, are the keys."""
    name = BUILTIN_KEYS.get(getattr(backbone, "name", ""))
    if name is None:
        return None
    path = Path(__file__).resolve().parent.parent / "weights" / name
    if not path.exists():
        return None
    model = load_keys(path)
    channels = getattr(backbone, "feature_dim", 0)
    if channels and model.project.in_channels != channels:
        return None
    return model
