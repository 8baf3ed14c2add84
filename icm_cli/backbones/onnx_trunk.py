"""The EfficientNet-Lite trunk on ONNX Runtime: the same network, about 3-4x faster on a CPU.

What runs on ONNX Runtime is exactly what :meth:`EfficientNetLite._taps`
computes: ImageNet normalisation, the stem and the blocks up to the last
tap, returning the three tapped block outputs (strides 8, 16, 32) and the
fine ``levels`` (strides 2 and 4) the learned decoder reads. It is exported
from the very module and weights the torch path uses; everything after it
(L2 normalisation, resampling, the softmax self-attention) stays in torch,
unchanged.

The export is made once and kept in the cache folder (:mod:`icm_cli.cache`,
``onnx/``), keyed by a digest of the trunk's weights, the icm version and
the torch, onnx and onnxruntime versions. It is checked against torch on a
fixed input when made, and its bytes against their recorded SHA-256 every
time it is read: a corrupt or stale entry is rebuilt, never trusted. One
process exports while the others (shards, Ray workers) wait for it. The
learned decoder's export (:mod:`icm_cli.predict.decoder_onnx`) is kept the
same way (:func:`cached_export`).

``runtime`` choices: ``auto`` (ONNX Runtime on the CPU when it is
installed, torch on CUDA and MPS), ``torch``, ``onnx``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import io
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from icm_cli import cache
from icm_cli.config import RUNTIMES
from icm_cli.errors import RuntimeUnavailable, SettingError  # noqa: F401 (RuntimeUnavailable re-exported)
OPSET = 17
FORMAT = "icm-onnx-trunk-1"
#: Largest |onnx - torch| accepted on the check input, relative to the largest |torch| value
#: (measured: about 1e-6; a wrong graph is off by O(1)).
TOLERANCE = 1e-4
INSTALL_HINT = "pip install onnxruntime onnx"


def missing_packages(names: tuple[str, ...] = ("onnxruntime",)) -> list[str]:
    """Those of ``names`` that cannot be imported (onnxruntime runs the export; onnx, needed once, makes it)."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def resolve_runtime(requested: str, device_type: str, backbone=None) -> tuple[str, str | None]:
    """``(runtime, note)``: the runtime that runs the backbone, and why ``auto`` fell back to torch.

    ``auto``: ONNX Runtime on the CPU when it is installed and the backbone
    can be exported, torch otherwise (CUDA and MPS always run torch, without
    a note: that is the design, not a fallback). ``onnx`` asked explicitly
    raises :class:`RuntimeUnavailable` where it cannot run.
    """
    if requested not in RUNTIMES:
        raise SettingError(f"runtime takes {', '.join(RUNTIMES)} (got {requested!r})", option="--runtime")
    if requested == "torch":
        return "torch", None
    problem = None
    if device_type != "cpu":
        if requested == "onnx":
            raise RuntimeUnavailable(f"--runtime onnx runs on the CPU, not {device_type}: use --device cpu, "
                                     "or --runtime auto (torch on GPUs)")
        return "torch", None
    if missing_packages():
        problem = f"onnxruntime is not installed ({INSTALL_HINT})"
    elif backbone is not None and not getattr(backbone, "exports_onnx", False):
        problem = f"the {getattr(backbone, 'name', 'chosen')} backbone has no ONNX export"
    if problem is None:
        return "onnx", None
    if requested == "onnx":
        raise RuntimeUnavailable(f"--runtime onnx: {problem}")
    return "torch", f"the backbone runs on torch, about 3x slower on this CPU: {problem}"


def attach(backbone, requested: str, device_type: str) -> tuple[str, str | None]:
    """Resolve the runtime and, for ONNX, put the backbone's trunk on it. Returns ``(runtime, note)``.

    ``auto`` falls back to torch with a note (the reason, for the user, once)
    where the export cannot be made or fails its check; ``onnx`` raises
    :class:`RuntimeUnavailable` instead.
    """
    runtime, note = resolve_runtime(requested, device_type, backbone)
    if runtime == "onnx":
        try:
            backbone.trunk = load_trunk(backbone)
        except RuntimeUnavailable as exc:
            if requested == "onnx":
                raise RuntimeUnavailable(f"--runtime onnx: {exc}") from None
            backbone.trunk = None
            return "torch", f"the backbone runs on torch: {exc}"
    return runtime, note


def runtime_label(runtime: str) -> str:
    """``"onnxruntime 1.32.0"`` or ``"torch 2.13.0"``: what the run record keeps."""
    versions = runtime_versions()
    return f"onnxruntime {versions['onnxruntime']}" if runtime == "onnx" else f"torch {versions['torch']}"


def runtime_versions() -> dict[str, str]:
    """Versions of what makes and runs the export (part of its cache key)."""
    out = {"torch": torch.__version__}
    for name in ("onnx", "onnxruntime"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


def weights_digest(module: torch.nn.Module) -> str:
    """:func:`state_digest` of ``module``, computed once per module (weights do not change after loading)."""
    digest = module.__dict__.get("_icm_weights_digest")
    if digest is None:
        digest = state_digest(module)
        module.__dict__["_icm_weights_digest"] = digest
    return digest


def check_input() -> torch.Tensor:
    """The fixed ``[1, 3, 96, 128]`` input both runtimes are compared on (seeded, in [0, 1])."""
    return torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(1234))


@dataclass
class OnnxTrunk:
    """An ONNX Runtime session that returns what ``backbone._taps`` returns.

    ``__call__``: ``[B, 3, H, W]`` float32 in [0, 1] (CPU) -> ``(taps, levels)``:
    a list of ``[B, C_i, H/s_i, W/s_i]`` tensors and ``{stride: [B, C, H/s, W/s]}``.
    """

    session: object
    tap_count: int
    level_strides: tuple[int, ...]
    path: Path | None = None
    exported: bool = False   # this process made the export (False: read from the cache)
    max_abs_diff: float = float("nan")

    def __call__(self, images: torch.Tensor) -> tuple[list[torch.Tensor], dict[int, torch.Tensor]]:
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        outs = [torch.from_numpy(o) for o in self.session.run(None, {"image": x})]
        return outs[:self.tap_count], dict(zip(self.level_strides, outs[self.tap_count:]))


class _TrunkGraph(torch.nn.Module):
    """What is exported: the backbone's own ``_taps``, its outputs flattened to a tuple."""

    def __init__(self, backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor):
        taps, levels = self.backbone._taps(images)
        return (*taps, *(levels[s] for s in sorted(levels)))


def _names(backbone) -> tuple[list[str], list[str]]:
    taps = [f"tap{i}" for i in range(len(backbone.taps))]
    levels = [f"level{s}" for s in sorted(backbone.level_blocks)]
    return taps, levels


def export_bytes(backbone) -> bytes:
    """The trunk of ``backbone`` as an ONNX model (opset 17, any batch and any H, W multiple of 32)."""
    taps, levels = _names(backbone)
    outputs = taps + levels
    axes = {"image": {0: "batch", 2: "height", 3: "width"}}
    axes.update({name: {0: "batch", 2: f"{name}_h", 3: f"{name}_w"} for name in outputs})
    return traced_onnx(backbone, _TrunkGraph(backbone).eval(), (check_input(),), ["image"], outputs, axes)


def traced_onnx(module: torch.nn.Module, graph: torch.nn.Module, inputs: tuple, input_names: list[str],
                output_names: list[str], axes: dict) -> bytes:
    """``graph`` (which runs ``module``) traced on ``inputs`` into ONNX bytes (opset :data:`OPSET`,
    ``axes`` dynamic), with ``module`` in eval mode meanwhile (its BatchNorm statistics are not touched)."""
    buffer = io.BytesIO()
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints in the size maths
            torch.onnx.export(graph, inputs, buffer, dynamo=False, opset_version=OPSET, input_names=input_names,
                              output_names=output_names, dynamic_axes=axes, do_constant_folding=True)
    finally:
        module.train(was_training)
    return buffer.getvalue()


def open_session(model: bytes | Path, threads: int):
    """An ONNX Runtime CPU session of ``model`` computing on ``threads`` threads, which do not spin while idle."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # The stream shares two cores with a decoding and a finishing thread: threads that
    # spin while idle would take turns from them.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model) if isinstance(model, Path) else model, options,
                                providers=["CPUExecutionProvider"])


def compare(backbone, trunk: OnnxTrunk) -> float:
    """Largest |onnx - torch| over every output on :func:`check_input`, relative to the largest |torch|."""
    x = check_input()
    with torch.no_grad():
        ref_taps, ref_levels = backbone._taps(x)
    got_taps, got_levels = trunk(x)
    worst = 0.0
    for ref, got in zip(ref_taps + [ref_levels[s] for s in sorted(ref_levels)],
                        got_taps + [got_levels[s] for s in sorted(got_levels)]):
        if ref.shape != got.shape:
            return float("inf")
        scale = max(1.0, float(ref.abs().max()))
        worst = max(worst, float((ref.float() - got.float()).abs().max()) / scale)
    return worst


def cache_key(backbone) -> dict:
    """Everything an export depends on; its digest names the cache entry."""
    return {"format": FORMAT, "backbone": backbone.name, "taps": list(backbone.taps),
            "levels": {str(s): b for s, b in sorted(backbone.level_blocks.items())},
            "weights": weights_digest(backbone), "icm": _icm_version(), "opset": OPSET, **runtime_versions()}


def _icm_version() -> str:
    from icm_cli import __version__

    return __version__


def _trunk(backbone, session, path: Path | None, exported: bool, diff: float = float("nan")) -> OnnxTrunk:
    taps, levels = _names(backbone)
    return OnnxTrunk(session, len(taps), tuple(sorted(backbone.level_blocks)), path, exported, diff)


def _read_entry(folder: Path, filename: str, key: dict, open_model):
    """What ``open_model`` makes of the model cached in ``folder`` if its record matches ``key`` and its bytes
    their digest; else None."""
    model, meta_path = folder / filename, folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("key") != key or meta.get("sha256") != cache.file_sha256(model):
            return None
        return open_model(model, meta)
    except Exception:  # missing, unreadable, malformed, or a model ONNX Runtime refuses: rebuild
        return None


def cached_export(stem: str, filename: str, key: dict, open_model, export_checked):
    """An ONNX model kept in the cache folder's ``onnx/`` under ``stem`` and a digest of ``key``.

    ``open_model(path, meta)`` makes what runs a cached model (raising if ONNX Runtime refuses it);
    ``export_checked()`` exports it and checks it against torch, returning ``(bytes, made, max_abs_diff)``
    or raising :class:`RuntimeUnavailable`. Returns ``(made, path or None, exported)``: ``exported`` when
    this process made it. An entry whose record or bytes do not match is rebuilt, never trusted; one
    process exports while the others wait for it; without a writable cache folder the export is made
    in memory for this process only (``path`` None).
    """
    root = cache.cache_folder("onnx")
    if root is None:
        return export_checked()[1], None, True
    name = f"{stem}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]}"
    folder = root / name
    found = _read_entry(folder, filename, key, open_model)
    if found is not None:
        return found, folder / filename, False
    with cache.exclusive(root / f"{name}.lock"):
        found = _read_entry(folder, filename, key, open_model)  # another process may have made it meanwhile
        if found is not None:
            return found, folder / filename, False
        data, made, diff = export_checked()
        scratch = cache.scratch_folder(root, name)
        try:
            (scratch / filename).write_bytes(data)
            meta = {"key": key, "sha256": hashlib.sha256(data).hexdigest(), "max_abs_diff": diff}
            (scratch / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
            cache.discard(folder)  # what failed its check above
            os.replace(scratch, folder)
            with open(root / "exports.log", "a", encoding="utf-8") as log:  # when and by whom each was made
                log.write(json.dumps({"entry": name, "pid": os.getpid(), "time": time.time(),
                                      "max_abs_diff": diff}) + "\n")
        except OSError:  # a full disk or a lost race without locks: this process keeps its in-memory model
            cache.discard(scratch)
            return made, None, True
        return made, folder / filename, True


def _export_checked(backbone, threads: int) -> tuple[bytes, OnnxTrunk, float]:
    if missing_packages(("onnx",)):
        raise RuntimeUnavailable(f"exporting {backbone.name} to ONNX needs the onnx package ({INSTALL_HINT})")
    try:
        data = export_bytes(backbone)
    except Exception as exc:
        raise RuntimeUnavailable(f"exporting {backbone.name} to ONNX failed ({str(exc).splitlines()[0][:120]})") from None
    trunk = _trunk(backbone, open_session(data, threads), None, True)
    trunk.max_abs_diff = compare(backbone, trunk)
    if not trunk.max_abs_diff <= TOLERANCE:
        raise RuntimeUnavailable(f"the ONNX export of {backbone.name} differs from torch by "
                                 f"{trunk.max_abs_diff:.2g} (more than {TOLERANCE:g})")
    return data, trunk, trunk.max_abs_diff


def load_trunk(backbone, threads: int | None = None) -> OnnxTrunk:
    """The backbone's trunk on ONNX Runtime: from the cache, or exported, checked and cached now
    (:func:`cached_export`).

    Raises :class:`RuntimeUnavailable` when it cannot be made or does not
    match torch. Without a writable cache folder the export is made in
    memory for this process only.
    """
    if missing_packages():
        raise RuntimeUnavailable(f"onnxruntime is not installed ({INSTALL_HINT})")
    threads = threads or torch.get_num_threads()

    def open_model(path: Path, meta: dict) -> OnnxTrunk:
        return _trunk(backbone, open_session(path, threads), path, False, float(meta.get("max_abs_diff", "nan")))

    trunk, path, _ = cached_export(backbone.name, "trunk.onnx", cache_key(backbone), open_model,
                                   lambda: _export_checked(backbone, threads))
    trunk.path = path
    return trunk


__all__ = ["RUNTIMES", "OnnxTrunk", "attach", "runtime_label", "RuntimeUnavailable", "cache_key", "cached_export",
           "compare", "export_bytes", "load_trunk", "missing_packages", "open_session", "resolve_runtime",
           "runtime_versions", "state_digest", "weights_digest"]
