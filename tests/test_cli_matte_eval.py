"""`icm matte` and `icm eval` end to end on small files the tests write."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from tests.conftest import save_png
from tests.test_matting import soft_edge

runner = CliRunner()


def trimap_u8(trimap: np.ndarray) -> np.ndarray:
    return np.where(trimap == 1.0, 255, np.where(trimap == 0.0, 0, 128)).astype(np.uint8)


@pytest.fixture
def photos(tmp_path):
    """Two images (PNG and JPEG) with trimaps named by stem, plus the true alphas."""
    truths = {}
    for i, stem in enumerate(["alpha_one", "beta"]):
        image, truth, trimap = soft_edge(seed=i, start=25 + 2 * i, stop=35 + 2 * i)
        suffix = ".jpg" if stem == "beta" else ".png"
        path = tmp_path / "images" / f"{stem}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=98)
        save_png(tmp_path / "trimaps" / f"{stem}.png", trimap_u8(trimap))
        truths[stem] = (truth, trimap)
    return tmp_path, truths


def run_matte(root, *extra):
    return runner.invoke(app, ["matte", str(root / "images"), "--trimaps", str(root / "trimaps"),
                               "-o", str(root / "out"), "--quiet", *extra])


def test_matte_writes_alpha_named_by_stem(photos):
    root, truths = photos
    res = run_matte(root)
    assert res.exit_code == 0, res.output
    for stem, (truth, trimap) in truths.items():
        out = Image.open(root / "out" / f"{stem}.png")
        assert out.mode == "L" and out.size == (60, 40)
        alpha = np.asarray(out).astype(float) / 255
        assert np.all(alpha[trimap == 1.0] == 1.0) and np.all(alpha[trimap == 0.0] == 0.0)
        assert np.abs(alpha - truth)[trimap == 0.5].mean() < 0.05, stem
    assert not (root / "out" / "cutout").exists()


def test_matte_skips_existing_outputs_unless_overwrite(photos):
    root, _ = photos
    assert run_matte(root).exit_code == 0
    sentinel = np.full((40, 60), 7, np.uint8)
    save_png(root / "out" / "beta.png", sentinel)
    res = run_matte(root)
    assert res.exit_code == 0
    assert np.array_equal(np.asarray(Image.open(root / "out" / "beta.png")), sentinel)
    assert run_matte(root, "--overwrite").exit_code == 0
    assert not np.array_equal(np.asarray(Image.open(root / "out" / "beta.png")), sentinel)


def test_missing_trimap_is_one_error_line_and_the_batch_goes_on(photos):
    root, _ = photos
    (root / "trimaps" / "alpha_one.png").unlink()
    res = run_matte(root)
    assert res.exit_code == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "alpha_one" in errors[0] and "no trimap" in errors[0]
    assert "Traceback" not in res.output
    assert (root / "out" / "beta.png").is_file()
    assert not (root / "out" / "alpha_one.png").exists()


def test_size_mismatch_and_corrupt_files_are_reported_per_file(photos):
    root, _ = photos
    save_png(root / "trimaps" / "beta.png", np.zeros((10, 10), np.uint8))
    (root / "images" / "gamma.png").write_bytes(b"not a png at all")
    save_png(root / "trimaps" / "gamma.png", np.zeros((40, 60), np.uint8))
    res = run_matte(root)
    assert res.exit_code == 1
    assert "trimap is 10x10 but" in res.stderr
    assert "gamma.png" in res.stderr and "corrupt" in res.stderr
    assert (root / "out" / "alpha_one.png").is_file()


def test_cutout_is_rgba_with_the_written_alpha(photos):
    root, _ = photos
    res = run_matte(root, "--cutout", "--method", "cf")
    assert res.exit_code == 0, res.output
    for stem in ("alpha_one", "beta"):
        cut = Image.open(root / "out" / "cutout" / f"{stem}.png")
        assert cut.mode == "RGBA"
        rgba = np.asarray(cut)
        assert rgba.shape == (40, 60, 4)
        assert np.array_equal(rgba[..., 3], np.asarray(Image.open(root / "out" / f"{stem}.png")))


def test_palette_and_float_trimaps_are_read_by_their_values(photos):
    root, truths = photos
    truth, trimap = truths["alpha_one"]
    # grey palette, as the alphamatting.com trimaps are stored
    pal = Image.fromarray(trimap_u8(trimap)).convert("P")
    assert pal.mode == "P"
    pal.save(root / "trimaps" / "alpha_one.png")
    # 0..1 float trimap for the other image
    (root / "trimaps" / "beta.png").unlink()
    Image.fromarray(truths["beta"][1].astype(np.float32), mode="F").save(root / "trimaps" / "beta.tif")
    res = run_matte(root)
    assert res.exit_code == 0, res.output
    for stem, (truth, trimap) in truths.items():
        alpha = np.asarray(Image.open(root / "out" / f"{stem}.png")).astype(float) / 255
        assert np.abs(alpha - truth)[trimap == 0.5].mean() < 0.05, stem


def test_unknown_method_is_a_usage_error(photos):
    root, _ = photos
    res = run_matte(root, "--method", "magic")
    assert res.exit_code == 2 and "magic" in res.output


# ------------------------------------------------------------------- eval

def square(top, left, size, shape=(10, 10)):
    m = np.zeros(shape, np.uint8)
    m[top:top + size, left:left + size] = 255
    return m


def test_eval_json_gives_the_known_iou(tmp_path):
    save_png(tmp_path / "pred" / "a.png", square(0, 0, 4))
    save_png(tmp_path / "pred" / "b.png", square(2, 2, 4))
    save_png(tmp_path / "gt" / "a.bmp", square(2, 2, 4))      # GT may have another suffix
    save_png(tmp_path / "gt" / "b.png", square(2, 2, 4))
    res = runner.invoke(app, ["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    per = {row["name"]: row for row in report["images"]}
    assert per["a"]["J"] == pytest.approx(4 / 28)
    assert per["b"]["J"] == 1.0 and per["b"]["F"] == 1.0
    assert report["mean"]["J"] == pytest.approx((4 / 28 + 1) / 2)
    assert report["missing"] == []


def test_eval_reports_missing_pairs(tmp_path):
    save_png(tmp_path / "pred" / "a.png", square(0, 0, 4))
    save_png(tmp_path / "pred" / "lost.png", square(0, 0, 4))
    save_png(tmp_path / "gt" / "a.png", square(0, 0, 4))
    save_png(tmp_path / "gt" / "unpredicted.png", square(0, 0, 4))
    res = runner.invoke(app, ["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "--json"])
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    assert [m["name"] for m in report["missing"]] == ["lost"]
    assert report["unpredicted"] == ["unpredicted"]
    assert report["mean"]["J"] == 1.0
    assert "lost.png" in res.stderr and "no ground truth" in res.stderr
    assert "unpredicted" in res.stderr


def test_eval_recursive_averages_frames_then_sequences(tmp_path):
    # sequence "one": 1 perfect frame; sequence "two": 3 frames with J = 0
    save_png(tmp_path / "pred" / "one" / "00001.png", square(0, 0, 4))
    save_png(tmp_path / "gt" / "one" / "00001.png", square(0, 0, 4))
    for i in range(1, 4):
        save_png(tmp_path / "pred" / "two" / f"{i:05d}.png", square(0, 0, 3))
        save_png(tmp_path / "gt" / "two" / f"{i:05d}.png", square(6, 6, 3))
    res = runner.invoke(app, ["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "--recursive", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    seqs = {s["sequence"]: s for s in report["sequences"]}
    assert seqs["one"]["J"] == 1.0 and seqs["one"]["frames"] == 1
    assert seqs["two"]["J"] == 0.0 and seqs["two"]["frames"] == 3
    assert report["mean"]["J"] == pytest.approx(0.5)          # not 0.25 (mean over frames)
    table = runner.invoke(app, ["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "--recursive"])
    assert "one" in table.stdout and "two" in table.stdout and "mean" in table.stdout


def test_eval_alpha_scores_the_unknown_band_of_the_trimaps(tmp_path):
    gt = np.zeros((10, 10), np.uint8)
    pred = gt.copy()
    pred[0, :4] = 255                          # 4 px wrong by 1.0, inside the band
    pred[9, 9] = 255                           # 1 px wrong outside the band
    trimap = np.zeros((10, 10), np.uint8)
    trimap[0:2, :] = 128
    save_png(tmp_path / "pred" / "x.png", pred)
    save_png(tmp_path / "gt" / "x.png", gt)
    save_png(tmp_path / "tri" / "x.png", trimap)
    res = runner.invoke(app, ["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "--kind", "alpha",
                              "--trimaps", str(tmp_path / "tri"), "--json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)["images"][0]
    assert row["SAD"] == pytest.approx(4 / 1000)
    assert row["MSE"] == pytest.approx(4 / 20)
    whole = runner.invoke(app, ["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "--kind", "alpha", "--json"])
    assert json.loads(whole.stdout)["images"][0]["SAD"] == pytest.approx(5 / 1000)


def test_eval_stability_per_sequence(tmp_path):
    import json as _json
    from PIL import Image as _Image
    from typer.testing import CliRunner as _Runner
    from icm_cli.cli import app as _app
    still = np.zeros((8, 8), np.uint8)
    still[2:6, 2:6] = 255
    moved = np.roll(still, 2, axis=1)
    for folder, frames in (("pred", [still, moved, still]), ("gt", [still, still, still])):
        for i, m in enumerate(frames):
            (tmp_path / folder / "seq").mkdir(parents=True, exist_ok=True)
            _Image.fromarray(m).save(tmp_path / folder / "seq" / f"{i:05d}.png")
    res = _Runner().invoke(_app, ["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "-r", "--stability", "--json"])
    assert res.exit_code == 0, res.output
    report = _json.loads(res.stdout)
    seq = report["sequences"][0]
    assert seq["T_gt"] == 1.0
    assert seq["T_pred"] == pytest.approx(8 / 24)  # each move keeps 8 of 24 pixels in the union
    assert report["mean"]["T_pred"] == pytest.approx(8 / 24)


def test_evaluate_is_the_library_behind_icm_eval(tmp_path):
    from icm_cli import IcmError, evaluate

    save_png(tmp_path / "pred" / "s" / "a.png", square(0, 0, 4))
    save_png(tmp_path / "pred" / "s" / "b.png", square(2, 2, 4))
    save_png(tmp_path / "pred" / "s" / "lost.png", square(2, 2, 4))
    save_png(tmp_path / "gt" / "s" / "a.png", square(2, 2, 4))
    save_png(tmp_path / "gt" / "s" / "b.png", square(2, 2, 4))
    result = evaluate(tmp_path / "pred", tmp_path / "gt", recursive=True, stability=True)
    assert [(i.name, i.sequence) for i in result.images] == [("s/a", "s"), ("s/b", "s")]
    assert result.images[0].scores["J"] == pytest.approx(4 / 28) and result.images[1].scores["J"] == 1.0
    assert result.mean["J"] == pytest.approx((4 / 28 + 1) / 2) and result.sequences[0].frames == 2
    assert result.mean["T_gt"] == 1.0 and result.mean["T_pred"] == pytest.approx(4 / 28)
    assert [u.name for u in result.unscored] == ["s/lost"] and "no ground truth" in result.unscored[0].error
    assert not result.complete
    cli = runner.invoke(app, ["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "-r", "--stability", "--json"])
    assert json.loads(cli.stdout) == json.loads(json.dumps(result.as_dict())) and cli.exit_code == 1
    with pytest.raises(IcmError, match="not found"):
        evaluate(tmp_path / "nothing", tmp_path / "gt")
    with pytest.raises(IcmError, match="^kind 'x'"):
        evaluate(tmp_path / "pred", tmp_path / "gt", kind="x")


def test_eval_short_k_still_means_kind_for_a_release_with_a_warning(tmp_path):
    save_png(tmp_path / "pred" / "x.png", square(0, 0, 4))
    save_png(tmp_path / "gt" / "x.png", square(0, 0, 4))
    res = runner.invoke(app, ["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "-k", "alpha", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["kind"] == "alpha" and "SAD" in json.loads(res.stdout)["mean"]
    assert "-k for --kind is deprecated" in res.stderr
    assert "-k" not in runner.invoke(app, ["eval", "--help"]).stdout.replace("--kind", "")


@pytest.mark.parametrize("spelling, kind", [("masks", "mask"), ("matte", "alpha"), ("mattes", "alpha"),
                                            ("ALPHA", "alpha")])
def test_eval_kind_takes_the_names_of_save_and_save_video(tmp_path, spelling, kind):
    gt = np.zeros((10, 10), np.uint8)
    gt[2:6, 2:6] = 255
    pred = gt.copy()
    pred[2:6, 5] = 0                           # 4 of 16 object pixels missed: IoU 0.75, SAD 4/1000
    save_png(tmp_path / "pred" / "x.png", pred)
    save_png(tmp_path / "gt" / "x.png", gt)
    res = runner.invoke(app, ["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "--kind", spelling, "--json"])
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout)
    assert scores["kind"] == kind
    if kind == "mask":
        assert scores["mean"]["J"] == pytest.approx(0.75)
    else:
        assert scores["mean"]["SAD"] == pytest.approx(4 / 1000)


def test_eval_unknown_kind_names_the_option_on_the_command_line_and_the_setting_in_the_library(tmp_path):
    from icm_cli import evaluate
    from icm_cli.errors import SettingError

    save_png(tmp_path / "pred" / "x.png", square(0, 0, 4))
    save_png(tmp_path / "gt" / "x.png", square(0, 0, 4))
    res = runner.invoke(app, ["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "--kind", "mask2"])
    assert res.exit_code == 2
    assert "--kind 'mask2' is not known; choose mask or alpha: did you mean mask?" in res.stderr
    with pytest.raises(SettingError, match="^kind 'mattes?x' is not known; choose mask or alpha: did you mean alpha"):
        evaluate(tmp_path / "pred", tmp_path / "gt", kind="mattex")
    assert evaluate(tmp_path / "pred", tmp_path / "gt", kind="masks").kind == "mask"
