"""`icm train-keys`: the video memory's key projection, trained on tiny clips the tests write."""

from __future__ import annotations

import json

import numpy as np
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from conftest import save_png, textured_scene
from icm_cli.cli import app
from icm_cli.predict.memory import KeyProjection, builtin_keys, load_keys
from icm_cli.training.keys import ClipFeatures, KeyRecipe, balanced_bce, fit_keys, validate_keys

runner = CliRunner()


def write_clips(root, clips=3, frames=6, val=True):
    """``clips`` sequence groups (the object moving a little each frame), the last held out when ``val``."""
    for c in range(clips):
        name = f"clip{c}"
        for i in range(frames):
            img, mask = textured_scene(64, 80, (14 + c, 8 + 5 * i, 30, 34), seed=100 * c + i)
            save_png(root / name / "images" / f"{i:03d}.png", img)
            save_png(root / name / "masks" / f"{i:03d}.png", mask * 255)
        meta = {"sequence": True}
        if val and c == clips - 1:
            meta["split"] = "val"
        (root / name / "group.json").write_text(json.dumps(meta))
    return root


def test_train_keys_writes_a_projection_the_memory_loads_with_its_recipe_and_figures(tmp_path):
    data = write_clips(tmp_path / "data")
    out = tmp_path / "keys.safetensors"
    res = runner.invoke(app, ["train-keys", str(data), "-o", str(out), "--steps", "4"])
    assert res.exit_code == 0, res.output
    assert "held-out clips, readout IoU" in res.output and f"wrote {out}" in res.output
    model = load_keys(out)
    assert model.project.in_channels == 344 and model.project.out_channels == 64
    with safe_open(str(out), "pt") as fh:
        meta = fh.metadata()
    assert json.loads(meta["recipe"])["steps"] == 4
    assert meta["train_clips"] == "clip0,clip1" and meta["val_clips"] == "clip2"
    figures = json.loads(meta["validation"])
    assert set(figures["per_clip"]["learned"]) == {"clip2"}
    assert 0.0 <= figures["mean"]["learned"][0] <= 1.0
    assert "torch" in json.loads(meta["versions"])
    # the same command again is refused (nothing overwritten); --overwrite replaces it with the same weights
    before = out.read_bytes()
    again = runner.invoke(app, ["train-keys", str(data), "-o", str(out), "--steps", "4"])
    assert again.exit_code == 2 and "exists" in again.output and out.read_bytes() == before
    redo = runner.invoke(app, ["train-keys", str(data), "-o", str(out), "--steps", "4", "--overwrite"])
    assert redo.exit_code == 0, redo.output
    assert torch.equal(load_keys(out).project.weight, model.project.weight)  # seeded, one thread


def test_train_keys_needs_two_training_clips_and_a_safetensors_name(tmp_path):
    data = write_clips(tmp_path / "data", clips=2)  # one trains, one is held out
    res = runner.invoke(app, ["train-keys", str(data), "-o", str(tmp_path / "k.safetensors"), "--steps", "2"])
    assert res.exit_code == 2 and "at least two sequence groups" in res.output
    assert not (tmp_path / "k.safetensors").exists()
    bad = runner.invoke(app, ["train-keys", str(data), "-o", str(tmp_path / "k.pt")])
    assert bad.exit_code == 2 and "must end in .safetensors" in bad.output


def test_balanced_bce_weighs_object_and_background_equally():
    target = torch.tensor([1.0, 0.0, 0.0, 0.0])
    read = torch.tensor([0.5, 0.5, 0.5, 0.5])
    # every cell read 0.5: the loss is ln 2 whatever the object's share
    assert abs(float(balanced_bce(read, target)) - float(np.log(2))) < 1e-5
    # a wrong object cell costs as much as all three wrong background cells together
    miss_object = balanced_bce(torch.tensor([0.1, 0.0, 0.0, 0.0]), target)
    miss_background = balanced_bce(torch.tensor([1.0, 0.9, 0.9, 0.9]), target)
    assert abs(float(miss_object) - float(miss_background)) < 1e-3


def test_fitted_keys_read_a_moving_object_better_than_chance():
    """Two clips whose object cells share one feature direction and background another: the fit learns keys
    whose readout finds the object in a held-out clip."""
    torch.manual_seed(0)

    def clip(name, shift):
        ft = torch.randn(6, 8, 6, 6) * 0.1
        share = torch.zeros(6, 6, 6)
        for t in range(6):
            share[t, 2:4, (t + shift) % 4:(t + shift) % 4 + 2] = 1
        ft[:, 0] += share * 2
        ft[:, 1] += (1 - share) * 2
        return ClipFeatures(name, ft.half(), share.half(), torch.ones(6, 6, dtype=torch.bool))

    model = fit_keys([clip("a", 0), clip("b", 1)], KeyRecipe(dim=4, steps=30, queries=36, max_gap=3, lr=1e-2))
    assert isinstance(model, KeyProjection)
    figures = validate_keys(model, [clip("c", 2)], memory_every=2, slots=2, topk=3)
    assert figures["c"][0] > 0.9 and figures["c"][1] > 0.9


def test_the_shipped_keys_load_for_the_default_backbone():
    from icm_cli.backbones import create_backbone

    keys = builtin_keys(create_backbone("efficientnet-lite0"))
    assert keys is not None and keys.project.in_channels == 344
    assert 0.005 < keys.temperature < 0.5
