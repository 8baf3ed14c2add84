"""As a library icm leaves its host process as it found it (issue 27): no global setting changes at import."""

import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image

from icm_cli import io
from icm_cli.process_settings import opencv_single_threaded


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_importing_icm_and_building_a_predictor_changes_no_global_setting():
    done = _run("""
        import PIL.Image, cv2, torch
        cv2.setNumThreads(3); torch.set_num_threads(2); PIL.Image.MAX_IMAGE_PIXELS = 1234567
        before = (PIL.Image.MAX_IMAGE_PIXELS, cv2.getNumThreads(), torch.get_num_threads())
        import icm_cli, icm_cli.predictor, icm_cli.review.thumbs, icm_cli.predict.fullres, icm_cli.predict.motion
        p = icm_cli.predictor.Predictor()
        after = (PIL.Image.MAX_IMAGE_PIXELS, cv2.getNumThreads(), torch.get_num_threads())
        print(before, after)
        assert after == before, (before, after)
    """)
    assert done.returncode == 0, done.stderr + done.stdout


def test_opencv_runs_single_threaded_inside_and_gets_its_count_back_after_nested_use():
    import cv2

    saved = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        with opencv_single_threaded():
            assert cv2.getNumThreads() == 1
            with opencv_single_threaded():  # a second icm thread inside at the same time
                assert cv2.getNumThreads() == 1
            assert cv2.getNumThreads() == 1  # the first is still inside
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(saved)


def test_an_image_over_pillows_guard_but_under_icms_limit_is_read_and_the_guard_stays(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(np.full((40, 50, 3), 7, np.uint8)).save(path)
    saved = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = 500  # the host's guard: 2000 px is over twice that, so Pillow refuses the file
        try:
            Image.open(path)
            raise AssertionError("Pillow's guard should have refused the file")
        except Image.DecompressionBombError:
            pass
        image = io.read_image(path, max_pixels=10_000)
        assert image.shape == (40, 50, 3) and int(image[0, 0, 0]) == 7
        assert Image.MAX_IMAGE_PIXELS == 500
        try:
            io.read_image(path, max_pixels=1_000)  # icm's own limit still applies
            raise AssertionError("icm's limit should have refused the file")
        except io.InputError as exc:
            assert "over the limit of 1000" in str(exc)
    finally:
        Image.MAX_IMAGE_PIXELS = saved
