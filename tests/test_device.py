"""The device resolver: what --device accepts, and one-line refusals."""

from __future__ import annotations

import pytest
import torch

from icm_cli.device import DeviceError, default_dtype, resolve_device


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text
    return text


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type in ("cpu", "cuda", "mps")
    assert resolve_device(None) == auto
    if not torch.cuda.is_available() and auto.type != "mps":
        assert auto == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_refused_without_cuda(name):
    with pytest.raises(DeviceError) as exc:
        resolve_device(name)
    text = _one_line(exc)
    assert f"--device {name}" in text and "no CUDA device" in text and "--device cpu" in text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_when_present():
    assert resolve_device("cuda").type == "cuda"
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(DeviceError):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_mps_refused_where_absent():
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        pytest.skip("MPS is present")
    with pytest.raises(DeviceError) as exc:
        resolve_device("mps")
    assert "MPS" in _one_line(exc)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu", "cuda:-1", ""])
def test_unknown_device_names(name):
    if name == "":
        assert resolve_device(name) == resolve_device("auto")  # empty means auto
        return
    with pytest.raises(DeviceError) as exc:
        resolve_device(name)
    text = _one_line(exc)
    assert "cpu" in text and ("unknown" in text or "CUDA" in text)


def test_default_dtype():
    assert default_dtype(torch.device("cpu")) == torch.float32
    assert default_dtype("mps") == torch.float32
    assert default_dtype(torch.device("cuda", 0)) == torch.float16
    assert default_dtype("cuda") == torch.float16

