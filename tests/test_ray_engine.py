"""`--engine ray`: the same bytes as the local engine, and nothing of Ray on the local path.

Every Ray run happens in a subprocess with a timeout, so a hung actor pool
fails the test instead of blocking CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import run_records, save_png, source_records, textured_scene

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--head-steps", "20", "--size", "128", "--quiet"]


def _python(code: str, timeout: int, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in ``cwd``; a hang raises TimeoutExpired (a failure)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A reference and 10 sources of two sizes, plus one corrupt file, as relative paths under root."""
    root = tmp_path_factory.mktemp("ray")
    img, mask = textured_scene(96, 128, (25, 30, 45, 55), seed=1)
    save_png(root / "ref.png", img)
    save_png(root / "ref_mask.png", mask * 255)
    for i in range(10):
        h, w = (96, 128) if i % 3 else (80, 120)
        s_img, _ = textured_scene(h, w, (10 + 2 * i, 15 + 5 * i, 40, 50), seed=30 + i)
        save_png(root / "src" / f"f{i:02d}.png", s_img)
    (root / "src" / "f04_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def test_local_engine_does_not_import_ray(images):
    res = _python(f"""
        import sys
        from typer.testing import CliRunner
        from icm_cli.cli import app
        r = CliRunner().invoke(app, ["propagate", "--ref", "ref.png", "--mask", "ref_mask.png", "src/f01.png",
                                     "-o", "out_local_only", *{FAST!r}])
        assert r.exit_code == 0, r.output
        print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
    """, timeout=120, cwd=images)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_engine_ray_without_ray_installed_is_one_line_with_the_install_command(images):
    res = _python("""
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed: `import ray` raises ImportError
        from icm_cli.cli import main
        sys.argv = ["icm", "propagate", "--ref", "ref.png", "--mask", "ref_mask.png", "src", "-o", "o",
                    "--engine", "ray"]
        main()
    """, timeout=60, cwd=images)
    assert res.returncode == 2
    assert res.stderr.strip() == 'error: the Ray engine needs Ray: pip install "ray[data]" (or ".[ray]" in the icm checkout)'
    assert not (images / "o").exists()


def test_ray_engine_writes_the_local_engines_bytes_and_a_bad_file_fails_alone(images):
    pytest.importorskip("ray", reason="the Ray engine is optional: pip install 'ray[data]'")
    res = _python(f"""
        import json, ray
        from typer.testing import CliRunner
        from icm_cli.cli import app
        fast = {FAST!r}
        base = ["propagate", "--ref", "ref.png", "--mask", "ref_mask.png"]
        runner = CliRunner()
        local = runner.invoke(app, base + ["src", "-o", "out_local", *fast])
        from icm_cli.cache import cache_root
        exports = lambda: len((cache_root() / "onnx" / "exports.log").read_text().splitlines())
        exports_before = exports()  # the local run's ONNX export (made now, or by an earlier test)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        remote = runner.invoke(app, base + ["src", "-o", "out_ray", *fast, "--engine", "ray", "--workers", "2"])
        new_exports = exports() - exports_before
        # A rerun finds everything done and skips it without any Ray work.
        again = runner.invoke(app, base + ["src/f00.png", "src/f01.png", "-o", "out_ray", *fast,
                                           "--engine", "ray", "--json"])
        ray.shutdown()
        print(json.dumps({{"local": [local.exit_code, local.output], "ray": [remote.exit_code, remote.output],
                          "again": [again.exit_code, again.stdout], "new_exports": new_exports}}))
    """, timeout=240, cwd=images)
    assert res.returncode == 0, res.stderr[-3000:]
    codes = json.loads(res.stdout.strip().splitlines()[-1])
    assert codes["local"][0] == 1 and codes["ray"][0] == 1, codes  # 1: the corrupt file failed
    assert "f04_corrupt.png" in codes["ray"][1]
    # The ONNX path on both engines: the workers read the one cached export, none re-exports.
    assert codes["new_exports"] == 0
    for out in ("out_local", "out_ray"):
        assert run_records(images / out / "manifest.jsonl")[0]["settings"]["runtime"].startswith("onnxruntime ")

    def files(out):
        return {p.relative_to(out).as_posix(): p.read_bytes()
                for p in (out).rglob("*.png") if not p.name.startswith(".")}

    local, remote = files(images / "out_local"), files(images / "out_ray")
    assert len(local) == 30 and local.keys() == remote.keys()  # 10 sources x 3 kinds, no corrupt outputs
    assert [k for k in local if local[k] != remote[k]] == []   # byte for byte, masks, trimaps and heat maps

    def records(out):  # the first record per input: the rerun appended "skipped" ones to out_ray
        first = {}
        for r in source_records(out / "manifest.jsonl"):
            rel = os.path.relpath(r["input"], images)  # inputs are recorded absolute
            first.setdefault(rel, (r["stem"], r["status"], r["error"], sorted(r["outputs"])))
        return first

    local_records, ray_records = records(images / "out_local"), records(images / "out_ray")
    assert ray_records == local_records and len(ray_records) == 11
    assert ray_records["src/f04_corrupt.png"][1] == "failed"
    assert [json.loads(l)["status"] for l in codes["again"][1].splitlines() if l.startswith("{")] == \
        ["skipped", "skipped"] and codes["again"][0] == 0
