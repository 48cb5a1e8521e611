"""The hand-written batched image operations kornia replaced (``bench/augment.py``'s
baseline), with per-sample parameters.

Every draw comes from an explicit ``torch.Generator`` on its own device and is then moved to the images'
device, so results depend only on the generator's state. Operations take and return uint8 ``[N, C, H, W]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from worker.augment.fastpath import PadMode, coin, hflip, normalize, randint, select, shifted_crop, uniform

__all__ = ["PadMode", "coin", "hflip", "normalize", "randint", "select", "shifted_crop", "uniform"]

# -- helpers ------------------------------------------------------------------------------------------------


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Round and clamp a float batch on the 0..255 scale to uint8."""
    return x.round().clamp_(0, 255).to(torch.uint8)


def per_sample(values: torch.Tensor, ndim: int = 4) -> torch.Tensor:
    """A ``[N]`` parameter shaped to broadcast over ``[N, C, H, W]``."""
    return values.view(-1, *([1] * (ndim - 1)))


# -- geometric ------------------------------------------------------------------------------------------------


def vflip(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror top-bottom the images where ``mask`` is True."""
    return select(mask, images.flip(-2), images)


def apply_to(
    images: torch.Tensor,
    mask: torch.Tensor,
    op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run ``op(images[idx], idx)`` on the samples where ``mask`` is True and write the results back.

    Grouping samples by operation keeps the work batched; ``op`` indexes its per-sample parameters with
    ``idx``. Writes into ``out`` (a copy of ``images`` unless given).
    """
    out = images.clone() if out is None else out
    idx = mask.nonzero().squeeze(1)
    if idx.numel():
        out[idx] = op(images[idx], idx)
    return out


def warp(
    images: torch.Tensor,
    matrix: torch.Tensor,
    mode: Literal["bilinear", "nearest"] = "bilinear",
    padding: Literal["zeros", "border"] = "zeros",
) -> torch.Tensor:
    """Resample each image through its ``[2, 3]`` matrix, which maps output pixel coordinates to input ones.

    Pixel centres sit at integer coordinates; points outside the image read 0 (``zeros``) or the nearest edge.
    """
    n, c, h, w = images.shape
    dev = images.device
    to_norm = torch.tensor([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]], device=dev)
    from_norm = torch.linalg.inv(to_norm)
    full = torch.cat([matrix.to(dev, torch.float32), to_norm[2].expand(n, 1, 3)], dim=1)
    theta = (to_norm @ full @ from_norm)[:, :2]
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    out = F.grid_sample(images.float(), grid, mode=mode, padding_mode=padding, align_corners=False)
    return to_uint8(out)


def affine(
    images: torch.Tensor,
    angle: torch.Tensor,
    translate: torch.Tensor,
    scale: torch.Tensor,
    shear: torch.Tensor,
    mode: Literal["bilinear", "nearest"] = "bilinear",
) -> torch.Tensor:
    """Rotate by ``angle`` degrees, shear by ``shear[:, 0]`` (x) and ``shear[:, 1]`` (y) degrees and scale about
    the centre, then translate by ``translate`` pixels (x, y); every argument has one row per image.

    Signs follow torchvision: a positive angle turns counter-clockwise (as ``rotate``; its ``affine`` turns
    clockwise), a positive x shear as ``affine``'s.
    """
    h, w = images.shape[-2:]
    # image rows grow downwards, so torchvision's counter-clockwise angles and shears are negative here
    a, sx, sy = (
        -torch.deg2rad(angle),
        -torch.tan(torch.deg2rad(shear[:, 0])),
        -torch.tan(torch.deg2rad(shear[:, 1])),
    )
    cos, sin = torch.cos(a), torch.sin(a)
    # forward linear part: scale * R(angle) @ [[1, sx], [0, 1]] @ [[1, 0], [sy, 1]]
    m00 = cos * (1 + sx * sy) - sin * sy
    m01 = cos * sx - sin
    m10 = sin * (1 + sx * sy) + cos * sy
    m11 = sin * sx + cos
    m00, m01, m10, m11 = (scale * m for m in (m00, m01, m10, m11))
    det = m00 * m11 - m01 * m10
    i00, i01, i10, i11 = m11 / det, -m01 / det, -m10 / det, m00 / det
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # output p -> input c + M^-1 (p - c - t)
    ox, oy = -cx - translate[:, 0], -cy - translate[:, 1]
    tx = cx + i00 * ox + i01 * oy
    ty = cy + i10 * ox + i11 * oy
    matrix = torch.stack([torch.stack([i00, i01, tx], 1), torch.stack([i10, i11, ty], 1)], 1)
    return warp(images, matrix, mode)


def resized_crop(images: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Crop each image to its ``box`` rows ``(top, left, height, width)`` in pixels and resize back to full size."""
    h, w = images.shape[-2:]
    top, left, bh, bw = box.unbind(1)
    zeros = torch.zeros_like(top)
    sx, sy = bw / w, bh / h
    matrix = torch.stack(
        [
            torch.stack([sx, zeros, left + 0.5 * sx - 0.5], 1),
            torch.stack([zeros, sy, top + 0.5 * sy - 0.5], 1),
        ],
        1,
    )
    return warp(images, matrix, "bilinear", padding="border")  # edges: half a pixel may fall outside


def random_resized_crop_boxes(
    generator: torch.Generator,
    n: int,
    h: int,
    w: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    device: torch.device,
    attempts: int = 10,
) -> torch.Tensor:
    """torchvision's ``RandomResizedCrop`` boxes ``[n, 4]`` (top, left, height, width), drawn for every image.

    Ten candidate boxes per image; the first that fits is kept, else the central crop clamped to ``ratio``.
    """
    area = h * w * uniform(generator, (n, attempts), scale[0], scale[1], device)
    log_ratio = uniform(generator, (n, attempts), math.log(ratio[0]), math.log(ratio[1]), device)
    aspect = torch.exp(log_ratio)
    cw = torch.sqrt(area * aspect).round()
    ch = torch.sqrt(area / aspect).round()
    fits = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.zeros(n, dtype=torch.long, device=device))
    bw = cw.gather(1, first[:, None]).squeeze(1)
    bh = ch.gather(1, first[:, None]).squeeze(1)
    found = fits.any(1)
    # fallback: the whole image, cropped to the nearest allowed aspect ratio
    in_ratio = w / h
    fw = float(w if ratio[0] <= in_ratio <= ratio[1] else (round(h * ratio[1]) if in_ratio > ratio[1] else w))
    fh = float(h if ratio[0] <= in_ratio <= ratio[1] else (h if in_ratio > ratio[1] else round(w / ratio[0])))
    bw = torch.where(found, bw, torch.full_like(bw, fw))
    bh = torch.where(found, bh, torch.full_like(bh, fh))
    u = uniform(generator, (2, n), 0.0, 1.0, device)
    top = torch.floor(u[0] * (h - bh + 1)).clamp_max(h - bh)
    left = torch.floor(u[1] * (w - bw + 1)).clamp_max(w - bw)
    top = torch.where(found, top, (h - bh) // 2)
    left = torch.where(found, left, (w - bw) // 2)
    return torch.stack([top, left, bh, bw], 1)


def erase(images: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a ``size x size`` square centred at ``(cy, cx)`` in each image (clipped at the borders)."""
    h, w = images.shape[-2:]
    ys = torch.arange(h, device=images.device).view(1, h, 1)
    xs = torch.arange(w, device=images.device).view(1, 1, w)
    y0, x0 = (cy - size // 2).view(-1, 1, 1), (cx - size // 2).view(-1, 1, 1)
    inside = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
    return images.masked_fill(inside[:, None], 0)


# -- colour -------------------------------------------------------------------------------------------------


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Float luminance ``[N, 1, H, W]`` of a float batch (the weights torchvision and PIL use)."""
    if x.shape[1] != 3:
        return x[:, :1]
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def blend(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """``ratio * a + (1 - ratio) * b`` per sample, clamped to 0..255 (float)."""
    r = per_sample(ratio)
    return (r * a + (1 - r) * b).clamp(0, 255)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean((1, 2, 3), keepdim=True)
    return blend(x, mean, factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x
    return blend(x, grayscale(x), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` turns (in [-0.5, 0.5]); grayscale images are left alone."""
    if x.shape[1] != 3:
        return x
    h, s, v = _rgb_to_hsv(x / 255.0).unbind(1)
    h = torch.remainder(h + per_sample(shift, 3), 1.0)
    return _hsv_to_rgb(h, s, v) * 255.0


def _rgb_to_hsv(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img.unbind(1)
    maxc = img.amax(1)
    minc = img.amin(1)
    equal = maxc == minc
    chroma = maxc - minc
    ones = torch.ones_like(maxc)
    s = chroma / torch.where(equal, ones, maxc)
    div = torch.where(equal, ones, chroma)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.remainder((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), 1)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = torch.remainder(i.to(torch.int64), 6)
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    sector = (i.unsqueeze(1) == torch.arange(6, device=h.device).view(1, 6, 1, 1)).to(v.dtype)  # [N, 6, H, W]
    r = torch.stack((v, q, p, p, t, v), 1)
    g = torch.stack((t, v, v, q, p, p), 1)
    b = torch.stack((p, p, t, v, v, q), 1)
    return torch.stack([(channel * sector).sum(1) for channel in (r, g, b)], 1)


def jitter_factors(
    generator: torch.Generator,
    n: int,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    device: torch.device,
) -> torch.Tensor:
    """Per-image ``ColorJitter`` draws ``[n, 4]``: brightness, contrast, saturation factors and hue shift."""
    return torch.stack(
        [
            uniform(generator, n, max(0.0, 1 - brightness), 1 + brightness, device),
            uniform(generator, n, max(0.0, 1 - contrast), 1 + contrast, device),
            uniform(generator, n, max(0.0, 1 - saturation), 1 + saturation, device),
            uniform(generator, n, -hue, hue, device),
        ],
        1,
    )


def color_jitter(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """torchvision's ``ColorJitter`` with per-image ``factors`` (see :func:`jitter_factors`), applied in the
    order brightness, contrast, saturation, hue and rounded once at the end.
    """
    b, c, s, h = factors.unbind(1)
    x = adjust_brightness(images.float(), b)
    x = adjust_contrast(x, c)
    x = adjust_saturation(x, s)
    x = adjust_hue(x, h)
    return to_uint8(x)


def sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageEnhance.Sharpness``: blend with a 3x3 smoothed copy (borders kept); factor 2 sharpens."""
    n, c, h, w = images.shape
    if h < 3 or w < 3:
        return images
    x = images.float()
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=images.device) / 13.0
    smooth = F.conv2d(x.reshape(n * c, 1, h, w), kernel.view(1, 1, 3, 3)).reshape(n, c, h - 2, w - 2)
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth.round()
    return to_uint8(blend(x, degenerate, factor))


def posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top ``bits`` (1..8, per image) bits of every value."""
    mask = (255 - (2 ** (8 - bits.to(torch.int64)) - 1)).to(torch.uint8)
    return images & per_sample(mask)


def solarize(images: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert the values at or above ``threshold`` (per image, 0..256)."""
    return torch.where(images.float() >= per_sample(threshold), 255 - images, images)


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to the full 0..255 range."""
    return TF.autocontrast(images)


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Histogram-equalise each channel of each image (PIL's algorithm, batched)."""
    return TF.equalize(images)
