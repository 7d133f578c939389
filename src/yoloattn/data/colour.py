"""Colour augmentation: hue, saturation and value jitter in 8-bit HSV through lookup tables.

:func:`hsv_jitter` works on channels-first ``uint8 [3, H, W]`` RGB planes with numpy only:
constant tables (built once per process, about 0.7 MB) give each pixel's saturation and hue
from its max, min and middle channels, small per-call tables apply the gains, and one table
gives the RGB channels back. :func:`yoloattn.data.augment.augment_hsv` draws the gains.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["hsv_jitter"]


@functools.cache
def _hsv_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Constant tables of the HSV step (HSV in 8 bits: hue on a circle of 256, saturation and
    value 0-255), built once per process:

    - ``sat[mx, mn]``: saturation of a pixel with max channel ``mx`` and min channel ``mn``;
    - ``hue[order, d, e]``: hue of a pixel whose channel order code is ``order`` (bits
      ``r >= g``, ``g >= b``, ``b >= r``), spread ``d = mx - mn`` and ``e = mid - mn``;
    - ``rgb[d, h]``: the three channels above the min of a pixel of spread ``d`` and hue ``h``,
      packed as ``r | g << 8 | b << 16``.
    """
    v = np.arange(256, dtype=np.float64)
    mx, mn = v[:, None], v[None, :]
    sat = np.where(mn <= mx, np.round(255.0 * (mx - mn) / np.maximum(mx, 1.0)), 0.0).astype(np.uint8)
    base, sign = np.zeros(8), np.zeros(8)  # hue in sixths: base + sign * e / d
    for order, b, sg in ((3, 0, 1), (1, 6, -1), (2, 2, -1), (6, 2, 1), (4, 4, -1), (5, 4, 1)):
        base[order], sign[order] = b, sg
    d, e = v[:, None], v[None, :]
    frac = np.minimum(e, d) / np.maximum(d, 1.0)
    hue6 = base[:, None, None] + sign[:, None, None] * frac[None]
    hue = (np.round(hue6 * (256.0 / 6.0)).astype(np.int64) % 256).astype(np.uint8)
    x = v * (6.0 / 256.0)  # hue of each table column, in sixths
    rgb = np.zeros((256, 256), np.uint32)
    for c in range(3):  # channel c peaks at 2c sixths: 1 within one sixth, 0 beyond two
        dist = np.abs(np.mod(x - 2.0 * c + 3.0, 6.0) - 3.0)
        rgb |= np.round(d * np.clip(2.0 - dist, 0.0, 1.0)[None]).astype(np.uint32) << (8 * c)
    return sat.ravel(), hue.ravel(), rgb.ravel()


def hsv_jitter(planes: np.ndarray, dh: float, gs: float, gv: float) -> np.ndarray:
    """Rotate the hue by ``dh`` of the full circle and multiply saturation and value by
    ``1 + gs`` and ``1 + gv`` (clipped to 255): a channels-first ``uint8 [3, H, W]`` RGB image in,
    a new one out.

    HSV in 8 bits as lookup tables (:func:`_hsv_tables`): each pixel's max, min and middle
    channels give its value, saturation and hue through constant tables; the hue is shifted by
    a whole step of the 256-step circle and saturation and value go through per-call tables on
    ``(max, min)``; the RGB channels come back from one table on (new spread, new hue). A round
    trip with zero gains changes a channel by at most 3 levels (Pillow's HSV round trip: up to
    7).
    """
    if planes.ndim != 3 or planes.shape[0] != 3 or planes.dtype != np.uint8:
        raise ValueError(f"hsv_jitter expects a uint8 [3, H, W] image, got {planes.dtype} {planes.shape}")
    sat, hue_t, rgb_t = _hsv_tables()
    _, h, w = planes.shape
    r, g, b = (np.ascontiguousarray(c).reshape(-1) for c in planes)
    mx = np.maximum(r, g)
    np.maximum(mx, b, out=mx)
    mn = np.minimum(r, g)
    np.minimum(mn, b, out=mn)
    mid = r ^ g  # the middle channel: r ^ g ^ b ^ max ^ min
    mid ^= b
    mid ^= mx
    mid ^= mn
    key = np.greater_equal(r, g).view(np.uint8).astype(np.uint32)
    key |= np.greater_equal(g, b).view(np.uint8) << np.uint8(1)
    key |= np.greater_equal(b, r).view(np.uint8) << np.uint8(2)
    key <<= 8
    key |= mx - mn
    key <<= 8
    mid -= mn
    key |= mid
    hue = hue_t.take(key)
    hue += np.uint8(round(dh * 256.0) % 256)
    # per call: new (min, spread) for each (max, min)
    v = np.arange(256, dtype=np.float64)
    new_v = np.clip(np.round(v * (1.0 + gv)), 0, 255)[:, None]
    new_s = np.clip(np.round(sat.astype(np.float64) * (1.0 + gs)), 0, 255).reshape(256, 256)
    new_mn = np.round(new_v * (1.0 - new_s / 255.0))
    table = (new_mn.astype(np.uint32) | ((new_v - new_mn).astype(np.uint32) << 8)).ravel()
    key = mx.astype(np.uint32)
    key <<= 8
    key |= mn
    packed = table.take(key)
    low = packed & np.uint32(255)
    packed >>= 8
    packed <<= 8
    packed |= hue
    out = rgb_t.take(packed)
    low *= np.uint32(0x010101)
    out += low
    return np.ascontiguousarray(out.view(np.uint8).reshape(h, w, 4)[..., :3].transpose(2, 0, 1))
