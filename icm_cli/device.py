"""The one device resolver: ``--device`` strings -> ``torch.device``, dtype and determinism.

Nothing else in icm picks a device; library code receives the
``torch.device`` this module returns.
"""

from __future__ import annotations

import re

import torch

from icm_cli.errors import DeviceError  # noqa: F401 (re-exported)

_CUDA = re.compile(r"^cuda(?::(\d+))?$")
CHOICES = "auto, cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises :class:`DeviceError` when the device is unknown or not available.
    """
    text = (name or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA.match(text)
    if match:
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: no CUDA device is available here "
                              f"(torch {torch.__version__}); use --device cpu or auto")
        count = torch.cuda.device_count()
        index = int(match.group(1)) if match.group(1) is not None else None
        if index is not None and index >= count:
            raise DeviceError(f"--device {name}: there {'is' if count == 1 else 'are'} only {count} "
                              f"CUDA device{'' if count == 1 else 's'} here (cuda:0 to cuda:{count - 1})")
        return torch.device("cuda", index) if index is not None else torch.device("cuda")
    if text == "mps":
        if not _mps_available():
            raise DeviceError(f"--device {name}: Apple MPS is not available here "
                              f"(torch {torch.__version__}); use --device cpu or auto")
        return torch.device("mps")
    raise DeviceError(f"--device {name}: unknown device; use one of {CHOICES}")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """Dtype for backbone inference on ``device``.

    float16 on CUDA: the backbone forward runs in half precision, which
    halves memory and uses tensor cores, while the backbones return their
    features and attention maps in float32 (normalisation, softmax and
    everything after them stay in float32), so masks do not change in any
    way that matters. float32 on CPU and MPS, where half precision is slow
    or poorly supported.
    """
    kind = device.type if isinstance(device, torch.device) else torch.device(device).type
    return torch.float16 if kind == "cuda" else torch.float32

