"""STN's data-augmentation hyperparameters, applied per sample on the device (stn_space.py; paper 4.3, Table 6).

Each sample i of a batch is augmented at its own hyperparameters (its lambda_i), as STN's CIFAR dataset does one
image at a time (`cnn/datasets/cifar.py`, `cnn/hypertrain.py` of github.com/asteroidhouse/self-tuning-networks).
Here it is one batched op per step, all random draws from the caller's generator on the images' device, no host
sync. Shapes: images (B, 3, H, W), every per-sample hyperparameter (B,).

    colour_jitter   images in [0, 1]: brightness x * b, then contrast (blend with the image's mean grey), then
                    saturation (blend with the pixel's grey), then hue (shift in HSV, in turns), each clamped to
                    [0, 1]: torchvision's `adjust_*` functions, which STN's `transforms.ColorJitter` calls. Factors
                    b, c, s ~ U[max(0, 1 - j), 1 + j], shift ~ U[-h, h]. ColorJitter applies the four in a random
                    order; here the order is fixed (as recipes.py's jitter), one difference from STN.
                    STN robustifies each jitter j to (1 - 2e-3) j + 1e-3 before use (`set_jitters`): `robustify`.
    cutout          after standardising (zeros are the dataset mean): `holes` squares of side `length` around
                    uniform centres (cy, cx) in [0, H) x [0, W), rows [floor(max(cy - L/2, 0)), floor(min(cy + L/2,
                    H))) and the same columns set to 0: STN's `util/cutout.py` (int() of a clipped float), holes
                    and length per sample (floored by the space, discrete), at most `max_holes` holes.
    input_scale     x * u, u ~ U[1 / (1 + s), 1 + s] per sample (STN's `inscale`, on the standardised input).
Input dropout (STN's `indropout`) is the per-sample dropout of models/dropout.py, applied by models/regularised.py.

The `*_factors` / `*_centres` functions make the random draws; the ops take them explicitly, so tests feed the same
draws to a one-sample-at-a-time reference (torchvision's functions, a plain Cutout).
"""
from __future__ import annotations

import torch
from torch import Tensor

GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
ROBUST_EPS = 1e-3  # STN's `set_jitters`: j' = (1 - 2 eps) j + eps


def robustify(j: Tensor) -> Tensor:
    return (1.0 - 2.0 * ROBUST_EPS) * j + ROBUST_EPS


def _grey(x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    return (GREY[0] * x[:, 0] + GREY[1] * x[:, 1] + GREY[2] * x[:, 2]).unsqueeze(1)


def _rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, 3, H, W) in [0, 1] -> h (turns, [0, 1)), s, v each (B, H, W) (torchvision's _rgb2hsv)."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_divisor = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_divisor, (maxc - g) / cr_divisor, (maxc - b) / cr_divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return h, s, maxc


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """h, s, v (B, H, W) -> (B, 3, H, W) (torchvision's _hsv2rgb)."""
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    # sector k of the hue circle: (r, g, b) = table[k]
    r = torch.stack([v, q, p, p, t, v], 1)
    g = torch.stack([t, v, v, q, p, p], 1)
    b = torch.stack([p, p, t, v, v, q], 1)
    idx = i.unsqueeze(1)  # (B, 1, H, W)
    return torch.cat([r.gather(1, idx), g.gather(1, idx), b.gather(1, idx)], 1)


def jitter_factors(bright: Tensor, contrast: Tensor, sat: Tensor, hue: Tensor,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-sample (B,) brightness, contrast, saturation factors ~ U[max(0, 1 - j), 1 + j] and hue shift ~ U[-h, h]
    from the (robustified) jitter strengths (B,) each."""
    u = torch.rand((4, bright.shape[0]), generator=generator, device=bright.device, dtype=bright.dtype)  # (4, B)

    def factor(j: Tensor, ui: Tensor) -> Tensor:
        lo = (1.0 - j).clamp_min(0.0)
        return lo + ui * (1.0 + j - lo)

    return factor(bright, u[0]), factor(contrast, u[1]), factor(sat, u[2]), hue * (2.0 * u[3] - 1.0)


def colour_jitter(x: Tensor, bright: Tensor, contrast: Tensor, sat: Tensor, hue_shift: Tensor) -> Tensor:
    """images (B, 3, H, W) in [0, 1], per-sample factors (B,) -> jittered images in [0, 1] (module docstring)."""
    col = (slice(None), None, None, None)  # (B,) -> (B, 1, 1, 1)
    x = (x * bright[col]).clamp(0.0, 1.0)
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    x = (contrast[col] * x + (1.0 - contrast[col]) * mean).clamp(0.0, 1.0)
    x = (sat[col] * x + (1.0 - sat[col]) * _grey(x)).clamp(0.0, 1.0)
    h, s, v = _rgb_to_hsv(x)
    h = torch.remainder(h + hue_shift[:, None, None], 1.0)
    return _hsv_to_rgb(h, s, v)


def cutout_centres(batch: int, max_holes: int, height: int, width: int, device,
                   generator: torch.Generator | None = None) -> Tensor:
    """long (B, max_holes, 2): uniform hole centres (row, column), as STN's np.random.randint(h), randint(w)."""
    u = torch.rand((batch, max_holes, 2), generator=generator, device=device)
    rows = (u[..., 0] * height).long().clamp_max(height - 1)  # no host tensor copied in: capturable
    cols = (u[..., 1] * width).long().clamp_max(width - 1)
    return torch.stack([rows, cols], -1)


def cutout(x: Tensor, length: Tensor, holes: Tensor, centres: Tensor) -> Tensor:
    """Per-sample Cutout: x (B, C, H, W), length, holes (B,) (integers as floats), centres long (B, K, 2) -> x with
    the first holes_i of sample i's K holes, of side length_i, set to 0 (module docstring)."""
    B, _, H, W = x.shape
    half = (length.float() / 2.0)[:, None]  # (B, 1)
    cy, cx = centres[..., 0].float(), centres[..., 1].float()  # (B, K)
    y1, y2 = (cy - half).clamp(0, H).floor(), (cy + half).clamp(0, H).floor()
    x1, x2 = (cx - half).clamp(0, W).floor(), (cx + half).clamp(0, W).floor()
    active = torch.arange(centres.shape[1], device=x.device)[None] < holes[:, None]  # (B, K)
    active = active & (length[:, None] > 0)
    rows = torch.arange(H, device=x.device, dtype=torch.float32)[None, None, :]  # (1, 1, H)
    cols = torch.arange(W, device=x.device, dtype=torch.float32)[None, None, :]
    in_rows = (rows >= y1[..., None]) & (rows < y2[..., None])  # (B, K, H)
    in_cols = (cols >= x1[..., None]) & (cols < x2[..., None])  # (B, K, W)
    cut = (in_rows[..., :, None] & in_cols[..., None, :] & active[..., None, None]).any(1)  # (B, H, W)
    return x * (~cut).unsqueeze(1).to(x.dtype)


def input_scale(x: Tensor, scale: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """x (B, ...) * u_i, u_i ~ U[1 / (1 + s_i), 1 + s_i] (STN's `inscale`)."""
    u = torch.rand(scale.shape, generator=generator, device=x.device, dtype=x.dtype)
    lo, hi = 1.0 / (1.0 + scale), 1.0 + scale
    factor = lo + (hi - lo) * u  # (B,)
    return x * factor.view(-1, *([1] * (x.dim() - 1)))
