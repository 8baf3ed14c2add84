"""The backbone on ONNX Runtime: the cached export (stale, corrupt, concurrent writers), the fallback
without onnxruntime, --runtime through the CLI, shards sharing one export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from icm_cli.cli import app
from tests.conftest import propagate_args, run_records, source_records

pytest.importorskip("onnxruntime", reason="the ONNX path needs onnxruntime")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def backbone():
    from icm_cli.backbones import create_backbone

    return create_backbone("efficientnet-lite0")


def _entries(root: Path) -> list[Path]:
    return sorted(p for p in (root / "onnx").iterdir() if p.is_dir() and not p.name.startswith("."))


def _exports(root: Path, what: str = "trunk") -> list[dict]:
    """The exports made under ``root``: of the backbone's trunk, or (``what="decoder"``) of the learned decoder."""
    log = root / "onnx" / "exports.log"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [r for r in rows if r["entry"].startswith("decoder-") == (what == "decoder")]


def test_export_matches_torch_and_is_read_back_from_the_cache(backbone, tmp_path, monkeypatch):
    from icm_cli.backbones.onnx_trunk import TOLERANCE, compare, load_trunk

    monkeypatch.setenv("ICM_CACHE_DIR", str(tmp_path))
    made = load_trunk(backbone)
    assert made.exported and made.max_abs_diff <= TOLERANCE
    again = load_trunk(backbone)
    assert not again.exported and again.path == made.path
    assert compare(backbone, again) <= TOLERANCE
    # Any multiple of 32 and any batch: the same outputs as torch's _taps.
    x = torch.rand(2, 3, 64, 160, generator=torch.Generator().manual_seed(3))
    got_taps, got_levels = again(x)
    with torch.no_grad():
        ref_taps, ref_levels = backbone._taps(x)
    for ref, got in zip(ref_taps + [ref_levels[2], ref_levels[4]], got_taps + [got_levels[2], got_levels[4]]):
        assert got.shape == ref.shape
        assert float((got - ref).abs().max()) <= TOLERANCE * max(1.0, float(ref.abs().max()))
    assert len(_entries(tmp_path)) == 1 and len(_exports(tmp_path)) == 1


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "meta of another version", "meta missing"])
def test_a_corrupt_or_stale_export_is_rebuilt_never_trusted(backbone, tmp_path, monkeypatch, damage):
    from icm_cli.backbones.onnx_trunk import TOLERANCE, compare, load_trunk

    monkeypatch.setenv("ICM_CACHE_DIR", str(tmp_path))
    first = load_trunk(backbone)
    model, meta = first.path, first.path.parent / "meta.json"
    data = model.read_bytes()
    if damage == "truncated":
        model.write_bytes(data[: len(data) // 2])
    elif damage == "flipped byte":  # still a loadable model, other weights: only the digest can tell
        pos = len(data) - 1000
        model.write_bytes(data[:pos] + bytes([data[pos] ^ 0x40]) + data[pos + 1:])
    elif damage == "meta of another version":
        record = json.loads(meta.read_text())
        record["key"]["onnxruntime"] = "0.0.1"
        meta.write_text(json.dumps(record))
    else:
        meta.unlink()
    rebuilt = load_trunk(backbone)
    assert rebuilt.exported, "a damaged entry must be exported again"
    assert compare(backbone, rebuilt) <= TOLERANCE
    assert not load_trunk(backbone).exported  # and the rebuilt entry is good
    assert len(_entries(tmp_path)) == 1 and len(_exports(tmp_path)) == 2
    assert not [p for p in (tmp_path / "onnx").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_other_weights_are_another_entry(backbone, tmp_path, monkeypatch):
    from icm_cli.backbones import create_backbone
    from icm_cli.backbones.onnx_trunk import cache_key, load_trunk, state_digest

    monkeypatch.setenv("ICM_CACHE_DIR", str(tmp_path))
    other = create_backbone("efficientnet-lite0")
    with torch.no_grad():
        other.blocks[0]._bn1.bias.add_(0.5)
    assert state_digest(other) != state_digest(backbone)
    assert cache_key(other)["weights"] != cache_key(backbone)["weights"]
    load_trunk(backbone)
    trunk = load_trunk(other)
    assert trunk.exported and len(_entries(tmp_path)) == 2
    with torch.no_grad():
        x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        assert float((trunk(x)[0][0] - other._taps(x)[0][0]).abs().max()) < 1e-3


def test_concurrent_writers_make_one_export_and_all_read_it(tmp_path):
    code = textwrap.dedent("""
        import json, sys, torch
        torch.set_num_threads(1)
        from icm_cli.backbones import create_backbone
        from icm_cli.backbones.onnx_trunk import compare, load_trunk
        bb = create_backbone("efficientnet-lite0")
        sys.stdin.read()  # start together
        trunk = load_trunk(bb)
        print(json.dumps({"exported": trunk.exported, "diff": compare(bb, trunk)}))
    """)
    env = {**os.environ, "ICM_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path) for _ in range(3)]
    for p in procs:
        p.stdin.write("go")
        p.stdin.close()
    results = []
    for p in procs:
        p.wait(timeout=300)
        out, err = p.stdout.read(), p.stderr.read()
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(r["exported"] for r in results) == 1
    assert all(r["diff"] <= 1e-4 for r in results)
    assert len(_entries(tmp_path)) == 1 and len(_exports(tmp_path)) == 1


def test_resolve_runtime_choices():
    from icm_cli.backbones.onnx_trunk import RuntimeUnavailable, resolve_runtime

    assert resolve_runtime("auto", "cpu") == ("onnx", None)
    assert resolve_runtime("auto", "cuda") == ("torch", None)  # GPUs run torch by design, no note
    assert resolve_runtime("torch", "cpu") == ("torch", None)
    with pytest.raises(RuntimeUnavailable, match="--runtime onnx runs on the CPU"):
        resolve_runtime("onnx", "cuda")
    with pytest.raises(ValueError, match="^runtime takes"):
        resolve_runtime("tensorrt", "cpu")


def test_cli_runtime_is_recorded_and_switching_it_keeps_earlier_results(small_scene, tmp_path):
    out = tmp_path / "out"
    runner = CliRunner()
    first = runner.invoke(app, propagate_args(small_scene, str(small_scene / "src"), "-o", str(out),
                                              "--runtime", "torch"))
    assert first.exit_code == 0, first.output
    onnx_out = tmp_path / "onnx_out"
    second = runner.invoke(app, propagate_args(small_scene, str(small_scene / "src"), "-o", str(onnx_out)))
    assert second.exit_code == 0, second.output
    # The same network: masks agree but for float rounding.
    import numpy as np
    from PIL import Image
    for name in ("s0", "s1", "s2"):
        a = np.asarray(Image.open(out / "masks" / f"{name}.png")) > 0
        b = np.asarray(Image.open(onnx_out / "masks" / f"{name}.png")) > 0
        assert (a != b).mean() < 0.01
    # Another runtime is not "other settings": a rerun keeps the results (skipped), not refused.
    third = runner.invoke(app, propagate_args(small_scene, str(small_scene / "src"), "-o", str(out),
                                              "--runtime", "onnx"))
    assert third.exit_code == 0, third.output
    runs = run_records(out / "manifest.jsonl")
    assert runs[0]["settings"]["runtime"].startswith("torch ")
    assert [r["status"] for r in source_records(out / "manifest.jsonl")][-3:] == ["skipped"] * 3
    assert run_records(onnx_out / "manifest.jsonl")[0]["settings"]["runtime"].startswith("onnxruntime ")
    assert "runtime" not in runs[0]["settings"]["model"]


def test_cli_bad_runtime_is_a_usage_error(small_scene, tmp_path):
    r = CliRunner().invoke(app, propagate_args(small_scene, str(small_scene / "src"), "-o", str(tmp_path / "o"),
                                               "--runtime", "tensorrt"))
    assert r.exit_code == 2
    assert "--runtime takes auto, torch, onnx" in r.output


def _without_onnxruntime(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` where ``import onnxruntime`` fails, as on a machine without it."""
    prelude = 'import sys\nsys.modules["onnxruntime"] = None\n'
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=env)


def test_without_onnxruntime_auto_falls_back_to_torch_and_says_why_once(small_scene, tmp_path):
    args = propagate_args(small_scene, str(small_scene / "src"), "-o", str(tmp_path / "out"))
    res = _without_onnxruntime(f"""
        from icm_cli.cli import main
        sys.argv = ["icm", *{args!r}]
        main()
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    notes = [line for line in res.stderr.splitlines() if "onnxruntime is not installed" in line]
    assert len(notes) == 1, res.stderr
    assert "runs on torch" in notes[0] and "pip install onnxruntime" in notes[0]
    assert run_records(tmp_path / "out" / "manifest.jsonl")[0]["settings"]["runtime"].startswith("torch ")
    assert len(list((tmp_path / "out" / "masks").glob("*.png"))) == 3


def test_without_onnxruntime_runtime_onnx_is_refused_in_one_line(small_scene, tmp_path):
    args = propagate_args(small_scene, str(small_scene / "src"), "-o", str(tmp_path / "out"), "--runtime", "onnx")
    res = _without_onnxruntime(f"""
        from icm_cli.cli import main
        sys.argv = ["icm", *{args!r}]
        main()
    """, tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: --runtime onnx: onnxruntime is not installed (pip install onnxruntime onnx)"]
    assert not (tmp_path / "out" / "masks").exists()


def test_shards_started_together_share_one_export_and_context(small_scene, tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "ICM_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, "-m", "icm_cli", *propagate_args(
        small_scene, str(small_scene / "src"), "-o", str(out), "--shard", f"{i}/2")], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert len(_exports(cache)) == 1  # one export between them; the other shard read it
    assert len(_exports(cache, "decoder")) == 2  # and one of each built-in decoder (prior-free, prior)
    assert len(list((cache / "contexts").glob("*.safetensors"))) == 1
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["s0.png", "s1.png", "s2.png"]
    for manifest in ("manifest.1-of-2.jsonl", "manifest.2-of-2.jsonl"):
        assert run_records(out / manifest)[0]["settings"]["runtime"].startswith("onnxruntime ")


def test_ray_workers_read_the_drivers_export_whatever_its_thread_count(small_scene, tmp_path):
    pytest.importorskip("ray", reason="the Ray engine is optional: pip install 'ray[data]'")
    cache = tmp_path / "cache"
    env = {**os.environ, "ICM_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    code = textwrap.dedent(f"""
        import ray
        from typer.testing import CliRunner
        from icm_cli.cli import app
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        r = CliRunner().invoke(app, {propagate_args(small_scene, str(small_scene / "src"), "-o", str(tmp_path / "out"),
                                                    "--engine", "ray", "--workers", "2")!r})
        ray.shutdown()
        assert r.exit_code == 0, r.output
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(_exports(cache)) == 1  # made by the driver; the two workers (one thread each) read it
    decoders = _exports(cache, "decoder")  # the decoders too, by the driver
    assert len(decoders) == 2 and {r["pid"] for r in decoders} == {r["pid"] for r in _exports(cache)}
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["s0.png", "s1.png", "s2.png"]
    assert run_records(tmp_path / "out" / "manifest.jsonl")[0]["settings"]["runtime"].startswith("onnxruntime ")
