"""The policy's static form on the GPU: one position of `hba_fast.augment.static` in three fused Triton kernels.

    mixed_pass(images uint8 (B, 3, H, W), params: MixedParams (B,), centres long (B, 2), cutout_fill) -> uint8

  _stats_kernel   grid (B, pixel blocks): per image and channel the histogram (atomic adds), the lowest and highest
                  value (atomic max of 255 - v and of v), and the image's luma sum -> int32 (B, STATS)
  _tables_kernel  grid (B, 3): per image and channel the 256-entry table of its op (identity, AutoContrast,
                  Equalize, Invert, Solarize, Posterize) -> uint8 (B, 3, 256); per image Contrast's grey level
  _pass_kernel    grid (B, pixel blocks): per output pixel the affine source (Pillow's two samplers evaluated, the
                  image's own kept; fill 128), the table lookup, the blend with the image's degenerate value (grey
                  level, luma, black, or SMOOTH of the 3x3 neighbourhood), Cutout's square
plus one zero fill of the statistics: four launches per position, whatever was drawn, where the torch passes of
static.py make about 180 operator calls. Nothing is read back to the host.

Exactness (the reference is static.py's torch passes, which equal hba_fast.augment.ops and so Pillow, bit for bit):
every step repeats the torch passes' arithmetic in the same order and precision: float64 for the affine
coefficients, AutoContrast's table and the grey level; 16.16 fixed point in int64; float32 for SMOOTH and the blend.
The kernels are compiled with enable_fp_fusion=False: a fused multiply-add (deg + f * (img - deg), the SMOOTH
rows) rounds once where Pillow rounds twice. Divisions are float64 (IEEE, correctly rounded) or of non-negative
integers. tests/test_mixed_ops.py checks the kernels against the torch passes under TRITON_INTERPRET=1 on the CPU
and on a GPU (`-m gpu`).
"""
from __future__ import annotations

import torch

from ..kernels.triton_support import jit, tl, triton
from .ops import SMOOTH_K1, SMOOTH_K5

STATS = 776  # int32 per image: 3 x 256 histogram | 3 x max(255 - v) | 3 x max(v) | luma sum | padding
_LOW, _HIGH, _LUMA = 768, 771, 774


@jit
def _stats_kernel(img_ptr,  # uint8 (B, 3, H*W)
                  stats_ptr,  # int32 (B, STATS), zeroed
                  HW, STATS: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < HW
    base = img_ptr + b * 3 * HW
    row = stats_ptr + b * STATS
    r = tl.load(base + offs, mask=valid, other=0).to(tl.int32)
    g = tl.load(base + HW + offs, mask=valid, other=0).to(tl.int32)
    bl = tl.load(base + 2 * HW + offs, mask=valid, other=0).to(tl.int32)
    tl.atomic_add(row + r, 1, mask=valid)
    tl.atomic_add(row + 256 + g, 1, mask=valid)
    tl.atomic_add(row + 512 + bl, 1, mask=valid)
    tl.atomic_max(row + 768, tl.max(tl.where(valid, 255 - r, 0), 0))  # lowest value = 255 - this
    tl.atomic_max(row + 769, tl.max(tl.where(valid, 255 - g, 0), 0))
    tl.atomic_max(row + 770, tl.max(tl.where(valid, 255 - bl, 0), 0))
    tl.atomic_max(row + 771, tl.max(tl.where(valid, r, 0), 0))
    tl.atomic_max(row + 772, tl.max(tl.where(valid, g, 0), 0))
    tl.atomic_max(row + 773, tl.max(tl.where(valid, bl, 0), 0))
    luma = (r * 19595 + g * 38470 + bl * 7471 + 0x8000) >> 16  # Pillow's RGB -> L
    tl.atomic_add(row + 774, tl.sum(tl.where(valid, luma, 0), 0))


@jit
def _tables_kernel(stats_ptr,  # int32 (B, STATS)
                   kind_ptr,  # int32 (B,): table kind, OpSpec.table (0 identity)
                   arg_ptr,  # float32 (B,): Solarize's magnitude / Posterize's cleared bits
                   tables_ptr,  # uint8 (B, 3, 256), written
                   level_ptr,  # float32 (B,): Contrast's grey level, written
                   HW, STATS: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    row = stats_ptr + b * STATS
    bins = tl.arange(0, 256)
    hist = tl.load(row + c * 256 + bins)  # (256,) int32
    lo = 255 - tl.load(row + 768 + c)
    hi = tl.load(row + 771 + c)
    kind = tl.load(kind_ptr + b)
    arg = tl.load(arg_ptr + b)

    # AutoContrast (ops.auto_contrast_lut), in doubles: trunc(i * s - lo * s) clipped, s = 255 / max(hi - lo, 1).
    scale = 255.0 / tl.maximum(hi.to(tl.float64) - lo.to(tl.float64), 1.0)
    offset = -lo.to(tl.float64) * scale
    auto = tl.minimum(tl.maximum((bins.to(tl.float64) * scale + offset).to(tl.int32), 0), 255)  # .to truncates
    auto = tl.where(hi > lo, auto, bins)
    # Equalize (ops.equalize_lut), in integers.
    last = tl.max(tl.where(hist > 0, bins, 0), 0)
    step = (HW - tl.sum(tl.where(bins == last, hist, 0), 0)) // 255
    before = tl.cumsum(hist, 0) - hist
    equal = (step // 2 + before) // tl.maximum(step, 1)
    equal = tl.where(step > 0, tl.minimum(tl.maximum(equal, 0), 255), bins)
    # Invert, Solarize (float32 m >= 256 - float32 i, as ops.solarize), Posterize (clear the low bits).
    inverted = 255 - bins
    solarized = tl.where(arg >= 256.0 - bins.to(tl.float32), inverted, bins)
    posterized = (bins >> arg.to(tl.int32)) << arg.to(tl.int32)  # i & (255 << bits) for 0 <= i <= 255

    table = tl.where(kind == 1, auto, bins)
    table = tl.where(kind == 2, equal, table)
    table = tl.where(kind == 3, inverted, table)
    table = tl.where(kind == 4, solarized, table)
    table = tl.where(kind == 5, posterized, table)
    tl.store(tables_ptr + b * 768 + c * 256 + bins, table.to(tl.uint8))
    # Contrast's grey level int(mean(L) + 0.5) (ops.grey_level); the three programs of an image write the same value.
    level = tl.floor(tl.load(row + 774).to(tl.float64) / HW + 0.5)
    tl.store(level_ptr + b, level.to(tl.float32))


@jit
def _pixel(base, y, x, W, mask):
    return tl.load(base + y * W + x, mask=mask, other=0).to(tl.float32)


@jit
def _smooth(base, y, x, W, interior, centre, K1: tl.constexpr, K5: tl.constexpr):
    """SMOOTH of one channel at (y, x) as ops.smooth forms it (float32, truncated), the pixel itself on the border."""
    below = (_pixel(base, y + 1, x - 1, W, interior) * K1 + _pixel(base, y + 1, x, W, interior) * K1) \
        + _pixel(base, y + 1, x + 1, W, interior) * K1
    middle = (_pixel(base, y, x - 1, W, interior) * K1 + _pixel(base, y, x, W, interior) * K5) \
        + _pixel(base, y, x + 1, W, interior) * K1
    above = (_pixel(base, y - 1, x - 1, W, interior) * K1 + _pixel(base, y - 1, x, W, interior) * K1) \
        + _pixel(base, y - 1, x + 1, W, interior) * K1
    ss = ((0.5 + below) + middle) + above
    ss = tl.minimum(tl.maximum(ss, 0.0), 255.0).to(tl.uint8)
    return tl.where(interior, ss.to(tl.int32), centre).to(tl.float32)


@jit
def _pass_kernel(img_ptr,  # uint8 (B, 3, H*W)
                 out_ptr,  # uint8 (B, 3, H*W), written
                 coeffs_ptr,  # float64 (B, 6): AFFINE data
                 tables_ptr,  # uint8 (B, 3, 256)
                 level_ptr,  # float32 (B,)
                 deg_ptr,  # int32 (B,): degenerate kind, OpSpec.degenerate (0 none)
                 factor_ptr,  # float32 (B,)
                 side_ptr,  # int32 (B,): Cutout's side (0: none)
                 centres_ptr,  # int64 (B, 2): Cutout's (row, col)
                 H, W, HW, CF0: tl.constexpr, CF1: tl.constexpr, CF2: tl.constexpr,
                 K1: tl.constexpr, K5: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < HW
    y = offs // W
    x = offs % W
    base = img_ptr + b * 3 * HW

    # Stage 1: Pillow's two samplers (ops.affine_nearest), the image's own kept.
    cf = coeffs_ptr + b * 6
    a0, a1, a2 = tl.load(cf), tl.load(cf + 1), tl.load(cf + 2)
    a3, a4, a5 = tl.load(cf + 3), tl.load(cf + 4), tl.load(cf + 5)
    scale_x = tl.floor((a2 + a0 * 0.5) + x.to(tl.float64) * a0).to(tl.int64)  # ImagingScaleAffine, doubles
    scale_y = tl.floor((a5 + a4 * 0.5) + y.to(tl.float64) * a4).to(tl.int64)
    f0 = tl.floor(a0 * 65536.0 + 0.5).to(tl.int64)  # affine_fixed: 16.16
    f1 = tl.floor(a1 * 65536.0 + 0.5).to(tl.int64)
    f2 = tl.floor(((a2 + a0 * 0.5) + a1 * 0.5) * 65536.0 + 0.5).to(tl.int64)
    f3 = tl.floor(a3 * 65536.0 + 0.5).to(tl.int64)
    f4 = tl.floor(a4 * 65536.0 + 0.5).to(tl.int64)
    f5 = tl.floor(((a5 + a3 * 0.5) + a4 * 0.5) * 65536.0 + 0.5).to(tl.int64)
    fixed_x = (f2 + x.to(tl.int64) * f0 + y.to(tl.int64) * f1) >> 16
    fixed_y = (f5 + x.to(tl.int64) * f3 + y.to(tl.int64) * f4) >> 16
    use_scale = (a1 == 0.0) & (a3 == 0.0)
    src_x = tl.where(use_scale, scale_x, fixed_x)
    src_y = tl.where(use_scale, scale_y, fixed_y)
    inside = (src_x >= 0) & (src_x < W) & (src_y >= 0) & (src_y < H)
    src = tl.where(inside, src_y * W + src_x, 0)
    v0 = tl.load(base + src, mask=valid & inside, other=128).to(tl.int32)  # 128: the geometric ops' fill
    v1 = tl.load(base + HW + src, mask=valid & inside, other=128).to(tl.int32)
    v2 = tl.load(base + 2 * HW + src, mask=valid & inside, other=128).to(tl.int32)

    # Stage 2: the image's tables.
    tables = tables_ptr + b * 768
    t0 = tl.load(tables + v0, mask=valid, other=0).to(tl.float32)
    t1 = tl.load(tables + 256 + v1, mask=valid, other=0).to(tl.float32)
    t2 = tl.load(tables + 512 + v2, mask=valid, other=0).to(tl.float32)

    # Stage 3: blend with the degenerate value, from stage 2's input (the image itself where this stage acts).
    kind = tl.load(deg_ptr + b)
    f = tl.load(factor_ptr + b)
    luma = ((v0 * 19595 + v1 * 38470 + v2 * 7471 + 0x8000) >> 16).to(tl.float32)
    level = tl.load(level_ptr + b)
    deg = tl.where(kind == 1, level, 0.0)
    deg = tl.where(kind == 2, luma, deg)
    interior = valid & (y >= 1) & (y < H - 1) & (x >= 1) & (x < W - 1)
    d0 = tl.where(kind == 4, _smooth(base, y, x, W, interior, v0, K1, K5), deg)
    d1 = tl.where(kind == 4, _smooth(base + HW, y, x, W, interior, v1, K1, K5), deg)
    d2 = tl.where(kind == 4, _smooth(base + 2 * HW, y, x, W, interior, v2, K1, K5), deg)
    o0 = tl.minimum(tl.maximum(d0 + f * (t0 - d0), 0.0), 255.0).to(tl.uint8)  # Image.blend, truncated
    o1 = tl.minimum(tl.maximum(d1 + f * (t1 - d1), 0.0), 255.0).to(tl.uint8)
    o2 = tl.minimum(tl.maximum(d2 + f * (t2 - d2), 0.0), 255.0).to(tl.uint8)

    # Stage 4: Cutout's square, rows and columns [centre - s // 2, centre - s // 2 + s).
    s = tl.load(side_ptr + b)
    top = tl.load(centres_ptr + 2 * b) - s // 2
    left = tl.load(centres_ptr + 2 * b + 1) - s // 2
    square = (y >= top) & (y < top + s) & (x >= left) & (x < left + s)
    out = out_ptr + b * 3 * HW
    tl.store(out + offs, tl.where(square, CF0, o0), mask=valid)
    tl.store(out + HW + offs, tl.where(square, CF1, o1), mask=valid)
    tl.store(out + 2 * HW + offs, tl.where(square, CF2, o2), mask=valid)


def mixed_pass(images: torch.Tensor, params, centres: torch.Tensor, cutout_fill: tuple[int, int, int]) -> torch.Tensor:
    """One position of the static form (static.apply_mixed's contract): images uint8 (B, 3, H, W), params a
    MixedParams of shape (B,), centres long (B, 2) -> uint8 (B, 3, H, W). Four launches, no host sync."""
    b, ch, h, w = images.shape
    assert ch == 3 and images.dtype == torch.uint8, (images.shape, images.dtype)
    assert params.coeffs.shape == (b, 6) and params.coeffs.dtype == torch.float64
    assert params.table.dtype == params.degenerate.dtype == params.side.dtype == torch.int32
    images = images.contiguous()
    if b == 0 or h * w == 0:
        return images.clone()
    hw = h * w
    block = min(1024, triton.next_power_of_2(hw))
    grid = (b, triton.cdiv(hw, block))
    dev = images.device
    stats = torch.zeros(b, STATS, dtype=torch.int32, device=dev)
    _stats_kernel[grid](images, stats, hw, STATS=STATS, BLOCK=block)
    tables = torch.empty(b, 3, 256, dtype=torch.uint8, device=dev)
    level = torch.empty(b, dtype=torch.float32, device=dev)
    _tables_kernel[(b, 3)](stats, params.table, params.table_arg, tables, level, hw, STATS=STATS,
                           enable_fp_fusion=False)
    out = torch.empty_like(images)
    _pass_kernel[grid](images, out, params.coeffs, tables, level, params.degenerate, params.factor, params.side,
                       centres.contiguous(), h, w, hw, *cutout_fill, K1=SMOOTH_K1, K5=SMOOTH_K5, BLOCK=block,
                       enable_fp_fusion=False)
    return out
