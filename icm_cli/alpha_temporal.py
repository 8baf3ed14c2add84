"""Steadier alpha mattes for video: a frame's unknown band leans on the previous frame's alpha
where the picture did not change.

Each frame's alpha is solved on its own, inside the band a trimap leaves
unknown around its mask, so small changes of the mask or of the image noise
move the soft edge from frame to frame: measured on DAVIS dev, the alpha was
less stable than the masks it came from (README, "Alpha for video"). Where
the pixels of two frames agree, the true alpha cannot have changed much
either, so there the new alpha is pulled towards the previous one; where the
picture changed (the object or the camera moved) the new alpha stands. The
pull is limited to the unknown band, so the sure object and background stay
exactly as the mask says, and it fades geometrically, so nothing lingers.

The state carried to the next frame is the alpha as written to the PNG
(rounded to 8 bits), so a run resumed from its PNGs continues exactly as an
uninterrupted one.
"""

from __future__ import annotations

import threading
from typing import Callable

import cv2
import numpy as np

#: Measured on DAVIS dev (benchmarks/video_alpha_stability.py): how far an unchanged pixel's alpha
#: moves towards the previous frame's, and the colour difference (0-255, per channel, averaged over
#: a 3x3 window) at which the pull has fallen to exp(-1/2) of that.
STRENGTH = 0.6
COLOUR_SIGMA = 16.0
WINDOW = 3


def steady_alpha(alpha: np.ndarray, band: np.ndarray, image: np.ndarray, previous_image: np.ndarray,
                 previous_alpha: np.ndarray, strength: float = STRENGTH, colour_sigma: float = COLOUR_SIGMA,
                 window: int = WINDOW) -> np.ndarray:
    """One frame's alpha pulled towards the previous frame's where the picture did not change.

    alpha, previous_alpha: ``[H, W]`` float in [0, 1]; band: ``[H, W]`` bool, where the pull may
    act (the trimap's unknown band); image, previous_image: ``[H, W, 3]`` uint8. Returns
    ``[H, W]`` float32: ``alpha + w * (previous_alpha - alpha)`` with
    ``w = strength * exp(-d^2 / (2 colour_sigma^2))`` in the band and 0 elsewhere, ``d`` the mean
    absolute difference of the two images' channels, box-averaged over ``window`` pixels.
    """
    diff = np.abs(image.astype(np.float32) - previous_image.astype(np.float32)).mean(axis=2)
    if window > 1:
        diff = cv2.blur(diff, (window, window), borderType=cv2.BORDER_REPLICATE)
    weight = strength * np.exp(-0.5 * (diff / colour_sigma) ** 2) * band
    alpha = alpha.astype(np.float32)
    return alpha + weight.astype(np.float32) * (previous_alpha.astype(np.float32) - alpha)


def quantised(alpha: np.ndarray) -> np.ndarray:
    """``[H, W]`` alpha as the PNG stores it: rounded to 1/255.

    Its results are exact levels ``k / 255``, which the PNG writer
    (:func:`icm_cli.matting.alpha_to_u8`) stores as ``k`` unchanged, so the
    state carried to the next frame is what the PNG holds. It rounds halves to
    even where ``alpha_to_u8`` rounds them up; about 7 in a million uniformly
    spread float32 values are such ties, so routing this through
    ``alpha_to_u8`` would change the bytes of steadied video alphas: it stays
    as the files were written before.
    """
    return np.round(np.clip(alpha, 0.0, 1.0) * 255.0).astype(np.float32) / 255.0


class SequenceMatte:
    """A matte function for frames in order: ``solve(image, trimap)`` then :func:`steady_alpha`.

    Called as ``matte(image, trimap)`` (trimap ``[H, W]`` float: 0, 0.5, 1)
    by the batch runner's writer thread, one frame after the other. A frame
    of another size than the last one starts afresh (a cut, or a resized
    frame). :meth:`prime` gives it the frame before a resumed run's first.
    """

    #: Frames solved at once ahead of the writer (:meth:`ahead`): the solve is most of a frame's alpha
    #: and needs nothing of the frame before it, so two frames' solves share the cores with the model.
    AHEAD_WORKERS = 2

    def __init__(self, solve: Callable[[np.ndarray, np.ndarray], np.ndarray], ahead_workers: int = AHEAD_WORKERS
                 ) -> None:
        self.solve = solve
        self._previous: tuple[np.ndarray, np.ndarray] | None = None  # image, alpha as written
        self._ahead_workers = ahead_workers
        self._pool = None
        self._solving: dict[int, tuple[np.ndarray, object]] = {}  # id(image) -> image, future of (trimap, alpha)
        self._lock = threading.Lock()

    def _solved(self, image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
        from icm_cli.matting import numba_threads

        # One numba thread: the model runs beside the solving threads, and a parallel region waits for
        # its slowest worker; on 2 cores the 30-frame run took 24 s this way against 27 s.
        with numba_threads(1):
            return quantised(self.solve(image, trimap))  # as an unsteadied run would write it

    def _solved_ahead(self, image: np.ndarray, trimap_of: Callable[[], np.ndarray]
                      ) -> tuple[np.ndarray, np.ndarray]:
        trimap = trimap_of()
        return trimap, self._solved(image, trimap)

    def ahead(self, image: np.ndarray, trimap_of: Callable[[], np.ndarray]) -> None:
        """Start solving a frame whose mask is decided, before the writer reaches it (frames in order).

        ``trimap_of()`` makes the frame's trimap; it runs on a solving thread, not on the caller's.
        Only the solve runs ahead; the steadying still takes the frames one after the other in
        :meth:`__call__`, which uses the early solve only for the trimap it is then given.
        """
        if self._ahead_workers < 1:
            return
        from concurrent.futures import ThreadPoolExecutor

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._ahead_workers, thread_name_prefix="icm-matte")
            self._solving[id(image)] = (image, self._pool.submit(self._solved_ahead, image, trimap_of))

    def close(self) -> None:
        """Stop the solving threads (frames solved ahead and never written are dropped)."""
        with self._lock:
            pool, self._pool = self._pool, None
            for _, future in self._solving.values():
                future.cancel()
            self._solving.clear()
        if pool is not None:
            pool.shutdown(wait=True)

    def prime(self, image: np.ndarray, alpha: np.ndarray) -> None:
        """The previous frame, ``[H, W, 3]`` uint8, and its written alpha, ``[H, W]`` float in [0, 1]."""
        self._previous = (image, quantised(alpha))

    def __call__(self, image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
        with self._lock:
            started = self._solving.pop(id(image), None)
        solved = started[1].result() if started is not None and started[0] is image else None
        if solved is not None and np.array_equal(solved[0], trimap):
            alpha = solved[1]
        else:
            alpha = self._solved(image, trimap)
        previous = self._previous
        if previous is not None and previous[0].shape == image.shape:
            band = (trimap > 0.25) & (trimap < 0.75)
            alpha = steady_alpha(alpha, band, image, previous[0], previous[1])
        alpha = quantised(alpha)
        self._previous = (image, alpha)
        return alpha
