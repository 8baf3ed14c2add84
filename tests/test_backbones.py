"""Backbones: output contract on non-square inputs, weight loading that refuses
bad or malicious files with one line, and `icm backbones`."""

from __future__ import annotations

import json
import os
import pickle
import random
import sys

import pytest
import torch

from icm_cli.backbones import WeightsError, create_backbone, get_spec, names


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, f"error is not one line: {text!r}"
    return text


def _assert_row_stochastic(attn: torch.Tensor) -> None:
    assert torch.isfinite(attn).all()
    assert (attn >= 0).all()
    torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]), atol=1e-4, rtol=0)


class _RunsShell:
    """Unpickling this would run a shell command (the attack weights_only stops)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _junk(seed: int, size: int = 4096) -> bytes:
    """Reproducible random bytes (a corrupted download)."""
    return random.Random(seed).randbytes(size)


def _malicious_pickles(tmp_path, name: str):
    """Two booby-trapped weight files (zip format via torch.save, and a bare
    pickle) whose loading would create ``marker``."""
    marker = tmp_path / "pwned"
    payload = {"weight": torch.zeros(2), "evil": _RunsShell(f"touch {marker}")}
    zipped = tmp_path / "zipped" / name
    zipped.parent.mkdir()
    torch.save(payload, zipped)
    bare = tmp_path / "bare" / name
    bare.parent.mkdir()
    bare.write_bytes(pickle.dumps(payload, protocol=2))
    # Control: the trap is live (plain unpickling runs it; here with a harmless command).
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_RunsShell(f"touch {control}")))
    assert control.exists()
    return marker, (zipped, bare)


# ---------------------------------------------------------------- registry

def test_registry_lists_default_and_dinov2():
    assert names()[0] == "efficientnet-lite0"
    for n in ("dinov2-small", "dinov2-base", "dinov2-large", "dinov2-giant"):
        spec = get_spec(n)
        assert spec.stride == 14
    assert [get_spec(n).feature_dim for n in ("dinov2-small", "dinov2-base", "dinov2-large", "dinov2-giant")] \
        == [384, 768, 1024, 1536]


def test_unknown_backbone_name_is_one_line_error():
    with pytest.raises(WeightsError) as exc:
        create_backbone("resnet-9000")
    text = _one_line(exc)
    assert "resnet-9000" in text and "efficientnet-lite0" in text and "dinov2-small" in text


def test_importing_icm_does_not_import_transformers():
    import subprocess
    code = "import sys, icm_cli.cli, icm_cli.backbones; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------- EfficientNet-Lite0

@pytest.fixture(scope="module")
def lite0():
    return create_backbone("efficientnet-lite0")


def test_default_backbone_non_square_contract(lite0):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 96, 160)
    with torch.no_grad():
        feats = lite0(images)
    assert feats.ft.shape == (2, lite0.feature_dim, 96 // 8, 160 // 8)
    assert feats.ft.dtype == torch.float32
    torch.testing.assert_close(feats.ft.norm(dim=1), torch.ones(2, 12, 20), atol=1e-4, rtol=0)
    assert list(feats.attn) == [(6, 10)]
    attn = feats.attn[(6, 10)]
    assert attn.shape == (2, 6, 10, 60)
    _assert_row_stochastic(attn)
    assert feats.stride == lite0.stride == 8


def test_lite0_channel_counts_match_its_layers_and_loading_leaves_the_weights_as_stored(lite0):
    from icm_cli.backbones.weights import load_state_dict

    with torch.no_grad():
        taps, levels = lite0._taps(torch.zeros(1, 3, 64, 64))
    assert lite0.tap_dims == tuple(t.shape[1] for t in taps) == (40, 112, 192) and lite0.feature_dim == 344
    assert lite0.level_dims == {s: t.shape[1] for s, t in levels.items()} == {2: 16, 4: 24}
    stored = load_state_dict(lite0.weights_path)["_blocks.3._bn2.running_mean"]
    assert torch.equal(lite0.blocks[3]._bn2.running_mean, stored)  # building it ran nothing in training mode


def test_default_backbone_rejects_sizes_off_its_multiple(lite0):
    with pytest.raises(ValueError, match="multiples of 32"):
        lite0(torch.rand(1, 3, 100, 160))


def test_efficientnet_missing_and_corrupt_weights(tmp_path):
    with pytest.raises(WeightsError) as exc:
        create_backbone("efficientnet-lite0", weights=tmp_path / "nope.pth")
    assert "not found" in _one_line(exc)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(_junk(0))
    with pytest.raises(WeightsError) as exc:
        create_backbone("efficientnet-lite0", weights=junk)
    assert str(junk) in _one_line(exc)
    junk_st = tmp_path / "junk.safetensors"
    junk_st.write_bytes(_junk(1))
    with pytest.raises(WeightsError) as exc:
        create_backbone("efficientnet-lite0", weights=junk_st)
    assert "safetensors" in _one_line(exc)


def test_malicious_pth_is_refused_without_running_it(tmp_path):
    marker, files = _malicious_pickles(tmp_path, "evil.pth")
    for path in files:
        with pytest.raises(WeightsError) as exc:
            create_backbone("efficientnet-lite0", weights=path)
        assert str(path) in _one_line(exc)
    assert not marker.exists()


# ------------------------------------------------------------------- DINOv2

def _tiny_dinov2(folder, registers: int = 0, seed: int = 0):
    """Save a tiny random DINOv2 (32 dims, 2 layers, 2 heads, patch 14,
    4x4 position grid) with save_pretrained; return the HF model."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  patch_size=14, image_size=56)
    if registers:
        config = transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **common)
        model = transformers.Dinov2WithRegistersModel(config)
    else:
        config = transformers.Dinov2Config(**common)
        model = transformers.Dinov2Model(config)
    model.eval().save_pretrained(str(folder))
    return model


def _hf_eager_attention(folder, images, prefix: int) -> torch.Tensor:
    """The reference: transformers' own eager attention of the last layer,
    heads averaged, prefix tokens dropped, rows re-normalised. [B, n, n]."""
    import transformers
    from icm_cli.backbones.base import imagenet_normalise
    cls = transformers.AutoModel
    ref = cls.from_pretrained(str(folder), attn_implementation="eager").eval()
    with torch.no_grad():
        out = ref(pixel_values=imagenet_normalise(images), output_attentions=True)
    a = out.attentions[-1].mean(1)[:, prefix:, prefix:]
    return a / a.sum(-1, keepdim=True)


@pytest.mark.parametrize("registers", [0, 2])
def test_dinov2_from_save_pretrained_folder_non_square(tmp_path, registers):
    _tiny_dinov2(tmp_path, registers=registers)
    net = create_backbone("dinov2-small", weights=tmp_path)  # the folder's config wins over "small"
    assert net.feature_dim == 32 and net.stride == 14 and net.multiple == 14
    torch.manual_seed(1)
    images = torch.rand(2, 3, 56, 98)  # 4 x 7 patches: positional embeddings are interpolated
    with torch.no_grad():
        feats = net(images)
    assert feats.ft.shape == (2, 32, 4, 7)
    assert feats.stride == 14
    torch.testing.assert_close(feats.ft.norm(dim=1), torch.ones(2, 4, 7), atol=1e-4, rtol=0)
    assert list(feats.attn) == [(4, 7)]
    attn = feats.attn[(4, 7)]
    assert attn.shape == (2, 4, 7, 28)
    _assert_row_stochastic(attn)
    ref = _hf_eager_attention(tmp_path, images, prefix=1 + registers)
    torch.testing.assert_close(attn.reshape(2, 28, 28), ref, atol=1e-5, rtol=1e-4)
    # Each image of a batch is computed on its own.
    with torch.no_grad():
        single = net(images[1:])
    torch.testing.assert_close(single.ft[0], feats.ft[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(single.attn[(4, 7)][0], attn[1], atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        no_attn = net(images, with_attention=False)
    assert no_attn.attn == {}
    with pytest.raises(ValueError, match="multiples of 14"):
        net(torch.rand(1, 3, 56, 100))


def test_dinov2_single_file_with_config_beside_it(tmp_path):
    model = _tiny_dinov2(tmp_path / "model")
    renamed = tmp_path / "model" / "my-dinov2.safetensors"
    (tmp_path / "model" / "model.safetensors").rename(renamed)
    net = create_backbone("dinov2-base", weights=renamed)
    assert net.feature_dim == 32
    torch.testing.assert_close(net.model.embeddings.cls_token, model.embeddings.cls_token)


def test_dinov2_lone_file_of_another_size_is_refused(tmp_path):
    _tiny_dinov2(tmp_path / "model")
    lone = tmp_path / "lone.safetensors"
    (tmp_path / "model" / "model.safetensors").rename(lone)
    with pytest.raises(WeightsError) as exc:  # architecture of dinov2-small, weights of the tiny model
        create_backbone("dinov2-small", weights=lone)
    text = _one_line(exc)
    assert str(lone) in text and "do not match the standard dinov2-small" in text


def test_dinov2_missing_folder_says_what_to_download(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(WeightsError) as exc:
        create_backbone("dinov2-small", weights=tmp_path / "absent")
    text = _one_line(exc)
    assert "not found" in text and "hf download facebook/dinov2-small" in text and "--weights" in text
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError) as exc:
        create_backbone("dinov2-small", weights=tmp_path / "empty")
    assert "config.json" in _one_line(exc)


def test_dinov2_not_cached_and_offline_says_what_to_download(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from icm_cli.backbones import dinov2
    monkeypatch.setattr(dinov2, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(WeightsError) as exc:
        dinov2.DinoV2("dinov2-base", None, cache_dir=tmp_path / "empty-cache")
    text = _one_line(exc)
    assert "hf download facebook/dinov2-base" in text and "--weights DIR" in text
    ok, why = dinov2.weights_status("dinov2-base", None, cache_dir=tmp_path / "empty-cache")
    assert not ok and "hf download" in why


def test_dinov2_found_in_hf_cache(tmp_path, monkeypatch):
    """A model in the HF cache layout loads without --weights and without the network."""
    pytest.importorskip("transformers")
    from icm_cli.backbones import dinov2
    repo = tmp_path / "cache" / "models--facebook--dinov2-small"
    snapshot = repo / "snapshots" / ("0" * 40)
    _tiny_dinov2(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(dinov2, "_hub_reachable", lambda timeout=3.0: pytest.fail("network probed"))
    ok, why = dinov2.weights_status("dinov2-small", None, cache_dir=tmp_path / "cache")
    assert ok and "cache" in why
    net = dinov2.DinoV2("dinov2-small", None, cache_dir=tmp_path / "cache")
    assert net.feature_dim == 32


@pytest.mark.parametrize("seed", [0, 1, 2])  # seed 2 makes torch's unpickler raise IndexError
def test_dinov2_corrupted_weights_are_one_line_errors(tmp_path, seed):
    _tiny_dinov2(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(_junk(seed))
    with pytest.raises(WeightsError) as exc:
        create_backbone("dinov2-small", weights=tmp_path)
    text = _one_line(exc)
    assert "model.safetensors" in text and "not a readable safetensors file" in text
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(_junk(seed))
    with pytest.raises(WeightsError) as exc:
        create_backbone("dinov2-small", weights=tmp_path)
    assert "pytorch_model.bin: refused" in _one_line(exc)
    lone = tmp_path / "lone.pth"
    lone.write_bytes(_junk(seed))
    with pytest.raises(WeightsError) as exc:
        create_backbone("dinov2-small", weights=lone)
    assert str(lone) in _one_line(exc)


def test_dinov2_malicious_pickles_are_refused_without_running_them(tmp_path):
    _tiny_dinov2(tmp_path / "model")
    (tmp_path / "model" / "model.safetensors").unlink()
    marker, files = _malicious_pickles(tmp_path, "pytorch_model.bin")
    for path in files:
        # as the weights of a save_pretrained folder (read by transformers) ...
        (tmp_path / "model" / "pytorch_model.bin").write_bytes(path.read_bytes())
        with pytest.raises(WeightsError) as exc:
            create_backbone("dinov2-small", weights=tmp_path / "model")
        assert "refused" in _one_line(exc)
        # ... and as a lone file (read by icm's own loader)
        lone = path.with_name("evil.pth")
        lone.write_bytes(path.read_bytes())
        with pytest.raises(WeightsError) as exc:
            create_backbone("dinov2-small", weights=lone)
        assert "refused" in _one_line(exc)
    assert not marker.exists()


def test_dinov2_other_model_type_is_refused(tmp_path):
    pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(WeightsError) as exc:
        create_backbone("dinov2-small", weights=tmp_path)
    assert "not DINOv2" in _one_line(exc)


def test_dinov2_without_transformers_names_the_extra(tmp_path, monkeypatch):
    from icm_cli.backbones import dinov2
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    with pytest.raises(WeightsError) as exc:
        create_backbone("dinov2-small", weights=tmp_path)
    assert 'pip install transformers safetensors' in _one_line(exc)
    monkeypatch.setattr(dinov2, "transformers_installed", lambda: False)
    ok, why = get_spec("dinov2-small").status(None)
    assert not ok and 'pip install transformers safetensors' in why


# ------------------------------------------------------------ icm backbones

def _backbones_app():
    try:
        from icm_cli.cli import app
        return app
    except ImportError:  # another command module not there yet: test ours alone
        import typer
        from icm_cli.commands.backbones import backbones
        app = typer.Typer()
        app.command("backbones")(backbones)
        app.command("noop")(lambda: None)
        return app


def test_icm_backbones_table_and_json(tmp_path):
    from typer.testing import CliRunner
    runner = CliRunner()
    app = _backbones_app()
    result = runner.invoke(app, ["backbones"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    line = next(l for l in result.output.splitlines() if "efficientnet-lite0" in l)
    assert "yes" in line
    assert "dinov2-giant" in result.output

    result = runner.invoke(app, ["backbones", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == set(names())
    lite0 = by_name["efficientnet-lite0"]
    assert lite0["usable"] is True and lite0["default"] is True
    assert lite0["feature_dim"] == 344 and lite0["stride"] == 8
    assert by_name["dinov2-small"]["feature_dim"] == 384 and by_name["dinov2-small"]["stride"] == 14

    result = runner.invoke(app, ["backbones", "--json", "--weights", str(tmp_path / "absent")])
    assert result.exit_code == 0, result.output
    assert not any(r["usable"] for r in json.loads(result.output))


def test_dinov2_status_checks_weights_without_loading(tmp_path):
    pytest.importorskip("transformers")
    status = get_spec("dinov2-small").status
    _tiny_dinov2(tmp_path / "model")
    assert status(str(tmp_path / "model"))[0]
    assert status(str(tmp_path / "model" / "model.safetensors"))[0]
    ok, why = status(str(tmp_path))
    assert not ok and "config.json" in why
    lite0 = get_spec("efficientnet-lite0").status(None)[1].removeprefix("weights: ")
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file
    save_file({"_conv_stem.weight": torch.zeros(2)}, str(other))
    assert not status(str(other))[0]
    assert status(lite0)[1].endswith("(contents checked when loaded)")


def test_building_the_backbone_leaves_its_weights_as_loaded():
    """The shape probe runs in inference mode: no BatchNorm statistic moves, whatever the thread count."""
    from icm_cli.backbones.efficientnet import packaged_weights_path
    from icm_cli.backbones.weights import load_state_dict

    net = create_backbone("efficientnet-lite0")
    loaded = load_state_dict(packaged_weights_path("efficientnet-lite0"))
    mean = net.stem[1].running_mean
    assert torch.equal(mean, loaded["_bn0.running_mean"])
    assert not net.training


def test_lite0_built_from_the_file_alone_same_weights_no_random_draws(tmp_path):
    """The network is laid out without random initialisation and takes the file's tensors as its weights:
    every tensor equals the file's, the host's random numbers are not drawn from, and a half-precision
    file runs in float32 as a copy into the network would have made it."""
    from icm_cli.backbones.efficientnet import packaged_weights_path
    from icm_cli.backbones.weights import load_state_dict

    path = packaged_weights_path("efficientnet-lite0")
    stored = load_state_dict(path)
    rng = torch.get_rng_state()
    net = create_backbone("efficientnet-lite0")
    assert torch.equal(torch.get_rng_state(), rng)
    own = net.state_dict()
    assert own and all(not t.is_meta for t in own.values())
    assert torch.equal(own["stem.0.weight"], stored["_conv_stem.weight"])
    assert torch.equal(own["stem.1.running_var"], stored["_bn0.running_var"])
    assert all(torch.equal(own[k], stored["_" + k]) for k in own if k.startswith("blocks."))
    assert all(p.requires_grad for p in net.parameters())  # as nn.Module leaves them; inference runs no_grad

    half = {k: (v.half() if v.is_floating_point() else v) for k, v in stored.items()}
    torch.save(half, tmp_path / "half.pth")
    net16 = create_backbone("efficientnet-lite0", weights=tmp_path / "half.pth")
    assert {t.dtype for t in net16.state_dict().values()} == {torch.float32, torch.int64}
    assert torch.equal(net16.blocks[3]._bn2.running_mean, half["_blocks.3._bn2.running_mean"].float())


def test_lite0_weights_of_another_shape_or_missing_tensors_are_refused(tmp_path):
    from icm_cli.backbones.efficientnet import packaged_weights_path
    from icm_cli.backbones.weights import load_state_dict

    stored = load_state_dict(packaged_weights_path("efficientnet-lite0"))
    wrong = dict(stored, **{"_blocks.3._bn2.running_mean": torch.zeros(7)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError) as exc:
        create_backbone("efficientnet-lite0", weights=tmp_path / "wrong.pth")
    assert "does not match efficientnet-lite0" in _one_line(exc)
    short = {k: v for k, v in stored.items() if not k.startswith("_blocks.5.")}
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(WeightsError) as exc:
        create_backbone("efficientnet-lite0", weights=tmp_path / "short.pth")
    assert "does not match efficientnet-lite0" in _one_line(exc) and "missing" in _one_line(exc)
