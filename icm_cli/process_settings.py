"""Process-wide settings of OpenCV and Pillow, changed only around icm's own work and put back after it.

As a library icm leaves its host process as it found it: importing icm or
building a :class:`~icm_cli.predictor.Predictor` changes no global setting.
Two settings matter to icm's work, and each is taken only for as long as
icm needs it:

- OpenCV's thread count. icm parallelises over images (and thumbnails), not
  inside one OpenCV call, and GrabCut/DIS flow give the same bits whatever the
  thread count only when it is fixed: icm's calls run with one thread.
  Several icm threads may be inside at once, so the count is set by the first
  that enters and put back by the last that leaves.
- Pillow's decompression-bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``). icm
  checks every image's size itself against its own limit (``--max-pixels``)
  before decoding, so an image under icm's limit that Pillow's guard refuses
  is opened with the guard lifted for that one ``open`` and put back after.

The ``icm`` command owns its process, so it takes both settings for the
whole run (:func:`claim_for_command_line`).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

_opencv_lock = threading.Lock()
_opencv_users = 0
_opencv_saved: int | None = None

_pillow_lock = threading.Lock()


@contextmanager
def opencv_single_threaded() -> Iterator[None]:
    """OpenCV runs on one thread inside this block; the count the host had comes back when the last user leaves."""
    import cv2

    global _opencv_users, _opencv_saved
    with _opencv_lock:
        if _opencv_users == 0:
            _opencv_saved = cv2.getNumThreads()
            if _opencv_saved != 1:
                cv2.setNumThreads(1)
        _opencv_users += 1
    try:
        yield
    finally:
        with _opencv_lock:
            _opencv_users -= 1
            if _opencv_users == 0 and _opencv_saved is not None and _opencv_saved != 1:
                cv2.setNumThreads(_opencv_saved)


def open_unguarded(path, **kwargs):
    """``PIL.Image.open(path)``, past Pillow's bomb guard when (and only when) that guard refuses the file.

    Callers check the size against icm's own limit themselves (see :func:`icm_cli.io.read_image`).
    """
    from PIL import Image

    try:
        return Image.open(path, **kwargs)
    except Image.DecompressionBombError:
        with _pillow_lock:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                return Image.open(path, **kwargs)
            finally:
                Image.MAX_IMAGE_PIXELS = saved


def claim_for_command_line() -> None:
    """The ``icm`` process is icm's own: one OpenCV thread and icm's pixel limit instead of Pillow's, for the run."""
    import cv2
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    cv2.setNumThreads(1)
