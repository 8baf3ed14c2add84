"""Carrying the previous frame's mask to where the object is now: dense optical flow.

A video's prior is the previous frame's mask; an object that moves leaves
it behind. The flow from the current frame back to the previous one
(OpenCV's DIS optical flow, no weights, a few milliseconds at half the
working size) says where each pixel was, so the previous mask can be
sampled there. Warping the true mask of the frame two steps back this way
raised its IoU with the current truth from 0.66 to 0.74 on DAVIS dev
(``fast`` preset; 0.79 with ``medium`` at several times the cost).

Everything is on the working canvas at half resolution: ``[h2, w2]`` with
``h2 = resized_h // 2`` and ``w2 = resized_w // 2`` (no padding).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from icm_cli.process_settings import opencv_single_threaded

PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
           "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


def half_size(geo) -> tuple[int, int]:
    """(h2, w2): half the resized image's size (at least 8 pixels a side)."""
    return max(8, geo.resized_h // 2), max(8, geo.resized_w // 2)


def grey_half(image: np.ndarray, geo) -> np.ndarray:
    """``[H, W, 3]`` uint8 -> ``[h2, w2]`` uint8 grey at half the working size."""
    h2, w2 = half_size(geo)
    return cv2.cvtColor(cv2.resize(image, (w2, h2), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)


def mask_half(mask: np.ndarray, geo) -> np.ndarray:
    """A full-size ``[H, W]`` mask -> ``[h2, w2]`` float32 object share at half the working size."""
    h2, w2 = half_size(geo)
    return cv2.resize(mask.astype(np.float32), (w2, h2), interpolation=cv2.INTER_AREA)


def warp_back(previous_mask: np.ndarray, previous_grey: np.ndarray, grey: np.ndarray,
              preset: str = "fast") -> np.ndarray:
    """The previous ``[h2, w2]`` mask sampled where each pixel of the current frame was in the previous one."""
    dis = cv2.DISOpticalFlow_create(PRESETS[preset])
    with opencv_single_threaded():  # the same flow, bit for bit, whatever the host's thread count
        flow = dis.calc(grey, previous_grey, None)  # current -> previous displacement of every current pixel
    h, w = grey.shape
    xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(previous_mask, xx + flow[..., 0], yy + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def half_to_prior(share: np.ndarray, geo) -> torch.Tensor:
    """A ``[h2, w2]`` object share -> ``[1, 1, Hc/4, Wc/4]`` on the stride-4 grid of the padded canvas."""
    ph, pw = geo.padded_h // 2, geo.padded_w // 2
    canvas = np.zeros((ph, pw), np.float32)
    h, w = min(ph, share.shape[0]), min(pw, share.shape[1])
    canvas[:h, :w] = share[:h, :w]
    return F.avg_pool2d(torch.from_numpy(canvas)[None, None], 2)
