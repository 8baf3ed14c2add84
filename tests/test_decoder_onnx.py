"""The learned decoder on ONNX Runtime: the same probability as torch (two image sizes, with and without
a prior, weights saved and loaded through the real loader), the cached export (kept, rebuilt when damaged,
one per weights), the fallback to torch with its reason, thread safety, and --runtime through the CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from icm_cli.predict.decoder import DecoderConfig, MaskDecoder, load_decoder, save_decoder
from icm_cli.predict.propagator import PropagateSettings, Propagator
from tests.conftest import propagate_args, textured_scene

pytest.importorskip("onnxruntime", reason="the ONNX path needs onnxruntime")
decoder_onnx = pytest.importorskip("icm_cli.predict.decoder_onnx")

#: Largest |onnx - torch| probability accepted (measured: about 1e-7).
PROB_TOL = 1e-5


@pytest.fixture(scope="module")
def backbone():
    from icm_cli.backbones import create_backbone

    return create_backbone("efficientnet-lite0")


def _random_decoder(path: Path, *, prior: bool, width2: int = 0, seed: int = 0) -> Path:
    """A small decoder with random weights everywhere (its residual heads too: an untrained decoder would only
    upsample the propagator's logit) and moved BatchNorm statistics, saved as a weights file."""
    torch.manual_seed(seed)
    model = MaskDecoder(DecoderConfig(width8=8, width4=8, width2=width2, prior=prior))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
        h, w = 4, 6
        model.train()(torch.rand(2, 7, h, w), torch.rand(2, 3, 8 * h, 8 * w),
                      {2: torch.randn(2, 16, 4 * h, 4 * w), 4: torch.randn(2, 24, 2 * h, 2 * w)},
                      {2: torch.nn.functional.normalize(torch.randn(2, 2, 16), dim=-1),
                       4: torch.nn.functional.normalize(torch.randn(2, 2, 24), dim=-1)})
    save_decoder(model.eval(), path)
    return path


def _entries(root: Path, stem: str = "decoder") -> list[Path]:
    return sorted(p for p in (root / "onnx").iterdir() if p.is_dir() and p.name.startswith(stem + "-"))


def _exports(root: Path, stem: str = "decoder") -> list[dict]:
    log = root / "onnx" / "exports.log"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [r for r in rows if r["entry"].startswith(stem + "-")]


@pytest.mark.parametrize("prior, width2", [(False, 4), (True, 0)], ids=["prior-free, stride 2", "reads priors"])
def test_onnx_decoder_gives_torchs_probability_at_two_sizes(backbone, tmp_path, monkeypatch, prior, width2):
    monkeypatch.setenv("ICM_CACHE_DIR", str(tmp_path / "cache"))
    weights = _random_decoder(tmp_path / "dec.safetensors", prior=prior, width2=width2)
    settings = PropagateSettings(size=64, min_size=64, head_steps=0, augmentations=1, decoder=str(weights))
    prop = Propagator(backbone, settings=settings)
    assert prop.decoders.use_runtime("onnx") is None and prop.decoders.runtime == "onnx"
    assert prop.reads_priors == prior
    ref, ref_mask = textured_scene(64, 80, (16, 20, 30, 36), seed=1)
    prop.set_references([(ref, ref_mask)])
    ran_onnx = []
    feed = decoder_onnx.OnnxDecoder.feed
    monkeypatch.setattr(decoder_onnx.OnnxDecoder, "feed",
                        lambda self, *a, **k: ran_onnx.append(feed(self, *a, **k)) or ran_onnx[-1])
    # Two sizes and aspects: canvases of 64x96 and 128x64 (the export was traced on neither).
    for h, w in ((60, 90), (120, 56)):
        img, mask = textured_scene(h, w, (h // 4, w // 4, h // 2, w // 2), seed=h)
        cases = [prop.predict_grid([img])[0]]
        if prior:
            cases.append(prop.predict_grid([img], priors=[mask > 0])[0])
            assert cases[-1].prior is not None
        for evidence in cases:
            prop.decoders.use_runtime("torch")
            on_torch = prop.decode(img, evidence)
            prop.decoders.use_runtime("onnx")
            on_onnx = prop.decode(img, evidence)
            assert on_onnx.shape == on_torch.shape
            assert float(on_torch.std()) > 0.01  # the random decoder's output is not a constant
            assert float((on_onnx - on_torch).abs().max()) <= PROB_TOL
    assert ran_onnx and all(f is not None for f in ran_onnx)  # ONNX Runtime decoded, not the torch fallback


def test_onnx_decoder_logits_known_inputs_and_grids_it_cannot_take(tmp_path, monkeypatch):
    """The check inputs at a third grid, and a level that is not twice the maps' grid (the torch module
    decodes it)."""
    monkeypatch.setenv("ICM_CACHE_DIR", str(tmp_path))
    model = load_decoder(_random_decoder(tmp_path / "d.safetensors", prior=True, width2=4, seed=3))
    onnx = decoder_onnx.load_decoder(model)
    inputs = decoder_onnx.check_inputs(model, (9, 4), seed=7)
    maps, canvas, lv4, p4, lv2, p2, prior, _ = inputs
    levels, protos = {4: lv4, 2: lv2}, {4: p4, 2: p2}
    with torch.no_grad():
        want = model(maps, canvas, levels, protos, prior=prior)
    got = onnx(maps, canvas, levels, protos, prior=prior)
    assert got.shape == want.shape == (1, 1, 36, 16)
    assert float((got - want).abs().max()) <= decoder_onnx.TOLERANCE * max(1.0, float(want.abs().max()))
    short = maps[:, :, :8]  # a map grid of 8 rows for a canvas of 72: the 2x2 pool of the export would not do
    assert onnx.feed(short, canvas, levels, protos, prior) is None
    with torch.no_grad():
        assert torch.equal(onnx(short, canvas, levels, protos, prior=prior),
                           model(short, canvas, levels, protos, prior=prior))


def test_export_is_cached_per_weights_and_a_damaged_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("ICM_CACHE_DIR", str(tmp_path))
    model = load_decoder(_random_decoder(tmp_path / "a.safetensors", prior=False))
    made = decoder_onnx.load_decoder(model)
    assert made.exported and made.max_abs_diff <= decoder_onnx.TOLERANCE and made.path.is_file()
    again = decoder_onnx.load_decoder(load_decoder(tmp_path / "a.safetensors"))  # the same weights, reloaded
    assert not again.exported and again.path == made.path
    assert decoder_onnx.compare(model, again) <= decoder_onnx.TOLERANCE
    data = made.path.read_bytes()
    pos = len(data) - 500  # still a loadable model, other weights: only the digest can tell
    made.path.write_bytes(data[:pos] + bytes([data[pos] ^ 0x40]) + data[pos + 1:])
    rebuilt = decoder_onnx.load_decoder(model)
    assert rebuilt.exported and decoder_onnx.compare(model, rebuilt) <= decoder_onnx.TOLERANCE
    other = decoder_onnx.load_decoder(load_decoder(_random_decoder(tmp_path / "b.safetensors", prior=False, seed=9)))
    assert other.exported and other.path != made.path
    assert len(_entries(tmp_path)) == 2 and len(_exports(tmp_path)) == 3
    assert not [p for p in (tmp_path / "onnx").iterdir() if p.name.startswith(".")]  # no temporaries left


@pytest.mark.parametrize("failure", ["export raises", "differs from torch"])
def test_a_failed_export_leaves_the_decoder_on_torch_and_says_why(backbone, tmp_path, monkeypatch, failure):
    monkeypatch.setenv("ICM_CACHE_DIR", str(tmp_path))
    if failure == "export raises":
        def broken(model):
            raise RuntimeError("Unsupported: ONNX export of operator frobnicate\nmore lines")
        monkeypatch.setattr(decoder_onnx, "export_bytes", broken)
        reason = "exporting the decoder to ONNX failed (Unsupported: ONNX export of operator frobnicate)"
    else:
        monkeypatch.setattr(decoder_onnx, "TOLERANCE", 0.0)  # any rounding at all now fails the check
        reason = "the decoder's ONNX export differs from torch by"
    weights = _random_decoder(tmp_path / "dec.safetensors", prior=False)
    prop = Propagator(backbone, settings=PropagateSettings(size=64, min_size=64, head_steps=0, augmentations=1,
                                                           decoder=str(weights)))
    note = prop.decoders.use_runtime("onnx")
    assert note.startswith("the learned decoder runs on torch: ") and reason in note
    assert prop.decoders.runtime == "torch" and not _entries(tmp_path)
    img, mask = textured_scene(48, 64, (12, 16, 24, 32), seed=2)
    prop.set_references([(img, mask)])
    with torch.no_grad():
        assert prop.decode(img, prop.predict_grid([img])[0]).shape == (1, 1, 16, 24)  # a 64x96 canvas, stride 4


def test_onnx_decoder_is_thread_safe(tmp_path, monkeypatch):
    """The stream's finishing threads decode at once: each gets what it would alone."""
    monkeypatch.setenv("ICM_CACHE_DIR", str(tmp_path))
    model = load_decoder(_random_decoder(tmp_path / "d.safetensors", prior=True))
    onnx = decoder_onnx.load_decoder(model)
    jobs = [decoder_onnx.check_inputs(model, (4 + i % 3, 5 + i % 2), seed=i) for i in range(8)]

    def run(inputs):
        maps, canvas, lv4, p4, prior, _ = inputs
        return onnx(maps, canvas, {4: lv4}, {4: p4}, prior=prior)

    alone = [run(job) for job in jobs]
    together: dict[int, torch.Tensor] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the stream's finishing threads run: one thread each, one session
    try:
        workers = [threading.Thread(target=lambda i=i: together.__setitem__(i, run(jobs[i]))) for i in range(8)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.allclose(together[i], alone[i], atol=1e-6, rtol=0) for i in range(8))


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) > 0 for p in sorted((folder / "masks").glob("*.png"))}


def test_cli_runtime_auto_decodes_on_onnx_and_torch_keeps_torch(small_scene, tmp_path, monkeypatch):
    runner = CliRunner()
    monkeypatch.setenv("ICM_CACHE_DIR", str(tmp_path / "torch-cache"))
    on_torch = runner.invoke(app, propagate_args(small_scene, str(small_scene / "src"), "-o", str(tmp_path / "t"),
                                                 "--runtime", "torch"))
    assert on_torch.exit_code == 0, on_torch.output
    assert not (tmp_path / "torch-cache" / "onnx").exists() or not _entries(tmp_path / "torch-cache")
    monkeypatch.setenv("ICM_CACHE_DIR", str(tmp_path / "onnx-cache"))
    on_onnx = runner.invoke(app, propagate_args(small_scene, str(small_scene / "src"), "-o", str(tmp_path / "o")))
    assert on_onnx.exit_code == 0, on_onnx.output
    assert "runs on torch" not in on_onnx.output
    # the built-in pair (prior-free, and the one that reads priors), each exported once
    assert len(_exports(tmp_path / "onnx-cache")) == 2 and len(_entries(tmp_path / "onnx-cache")) == 2
    a, b = _masks(tmp_path / "t"), _masks(tmp_path / "o")
    assert a.keys() == b.keys() == {"s0.png", "s1.png", "s2.png"}
    assert all((a[k] != b[k]).mean() < 0.01 for k in a)  # the same networks: float rounding at most


def test_cli_failed_decoder_export_is_said_once_and_the_run_goes_on(small_scene, tmp_path, monkeypatch):
    monkeypatch.setenv("ICM_CACHE_DIR", str(tmp_path / "cache"))

    def broken(model):
        raise RuntimeError("no exporter here")
    monkeypatch.setattr(decoder_onnx, "export_bytes", broken)
    r = CliRunner().invoke(app, propagate_args(small_scene, str(small_scene / "src"), "-o", str(tmp_path / "out")))
    assert r.exit_code == 0, r.output
    notes = [line for line in r.output.splitlines() if "the learned decoder runs on torch" in line]
    assert len(notes) == 1 and "no exporter here" in notes[0], r.output
    assert len(_masks(tmp_path / "out")) == 3
