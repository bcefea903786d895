"""The 15 augmentation ops of the search space (SPEC 3), batched in pure torch with Pillow's exact semantics.

Every op maps uint8 images (B, 3, H, W) and one float magnitude per sample (B,) to uint8 (B, 3, H, W), on any
device, with no Python loop over the batch and no host sync, so a whole policy can be captured in a CUDA graph.
Each op reproduces the integer and float arithmetic of Pillow's C code (libImaging), so results match
`PIL.ImageOps` / `PIL.ImageEnhance` / `Image.transform` bit for bit (tests/test_ops.py checks every op on real
CIFAR-10 images):

- geometric ops (ShearX/Y, TranslateX/Y, Rotate): Pillow's inverse affine map (x, y) -> (a x + b y + c,
  d x + e y + f) sampled at output pixel centres with NEAREST, fill (128, 128, 128). Pillow evaluates it in
  16.16 fixed point (`affine_fixed`: A = floor(65536 a + 0.5), source = (A2 + x A0 + y A1) >> 16 with
  A2 = FIX(c + a/2 + b/2)), or, when b = d = 0 (translations), in doubles (`ImagingScaleAffine`: source =
  floor(c + a/2 + x a)). Both are reproduced exactly in float64 (the fixed-point sums are integers below
  2^53). Each op's AFFINE data comes from its `*_coeffs(m, height, width)` function.
- LUT ops (AutoContrast, Equalize, Invert, Solarize, Posterize): per-image, per-channel 256-entry tables
  (B, 3, 256) built with Pillow's formulas (`auto_contrast_lut`, `equalize_lut`), then one gather.
- ImageEnhance ops (Contrast, Color, Brightness, Sharpness): `Image.blend(degenerate, img, f)` =
  uint8(clip(deg + f * (img - deg))) in float32, truncating; the degenerate images are the luma mean
  (Contrast), the luma L = (19595 R + 38470 G + 7471 B + 2^15) >> 16 (Color), black (Brightness) and the
  SMOOTH-filtered image, 3x3 kernel [[1,1,1],[1,5,1],[1,1,1]]/13 with the border pixels kept (Sharpness).
- Cutout: a square of side round(m * min(H, W)) filled with (125, 122, 113) at a uniform random centre
  (cy, cx), rows [cy - s//2, cy - s//2 + s) clipped at the borders (PBA/AutoAugment's cutout).

`OPS` is the one table of the ops (SPEC order): one `OpSpec` record per op holds every fact about it, and every
implementation hangs off it: its magnitude range and unit, whether the sign is random, the identity magnitude, the
fill colour, its kind (how the static form, hba_fast/augment/static.py, and DALI run it: an AFFINE map linear in m,
a rotation, a per-image table, a blend with a degenerate image, Cutout) with the kind's constants, the reference
code's level rule (AutoAugment's and PBA's levels, hba_fast/augment/levels.py), the torch implementation (here), and
the names of its Pillow and DALI implementations (functions of hba_fast/augment/pil.py and dali_ops.py: names, so
that this module imports neither; DALI is optional). No other module spells an op's name, except the published
policies that name their ops (hba_fast/augment/baselines.py: AutoAugment's policies, torchvision's RandAugment list)
and the other programs' own tables (PBA's slot order, Albumentations' transforms, in hba_fast/schedule/).

References: Pillow src/libImaging/{Geometry,Blend,Filter,Convert}.c and PIL/ImageOps.py, ImageEnhance.py;
PBA augmentation_transforms.py (Ho et al. 2019); SPEC section 3.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

FILL = (128, 128, 128)  # geometric ops' fill colour (PBA / AutoAugment)
CUTOUT_FILL = (125, 122, 113)  # PBA's cutout colour (CIFAR mean in uint8)

OpFn = Callable[[torch.Tensor, torch.Tensor, "torch.Generator | None"], torch.Tensor]


@dataclass(frozen=True)
class LevelRule:
    """The reference code's magnitude of a level L (0-10) of an op, as AutoAugment's and PBA's augmentation_transforms
    .py compute it (PARAMETER_MAX = 10): int_parameter(L, maxval) = int(L maxval / 10) when `whole`, else
    float_parameter(L, maxval) = L maxval / 10; plus `offset`; in pixels of the image when `pixels` (our unit is a
    fraction of its side). `reference_offset` is what the published reference code adds on top (hba_fast/augment/
    levels.py names the two variants)."""

    maxval: float
    whole: bool = False
    offset: float = 0.0
    pixels: bool = False
    reference_offset: float = 0.0


KINDS = ("affine", "rotate", "table", "blend", "cutout")


@dataclass(frozen=True)
class OpSpec:
    """One augmentation op: every fact about it, and its implementations (module docstring)."""

    name: str
    lo: float  # weakest magnitude (0 for ops without one)
    hi: float  # strongest magnitude
    signed: bool  # the policy flips the magnitude's sign with probability 0.5
    has_magnitude: bool  # False: the magnitude is ignored
    identity: float | None  # magnitude at which the op returns its input (None: no such value)
    unit: str | None  # what a magnitude means (None: no magnitude)
    kind: str  # one of KINDS: how the op works, which the static form and DALI follow
    fn: OpFn  # fn(images uint8 (B,3,H,W), magnitude float (B,), generator) -> uint8 (B,3,H,W)
    pil: str  # name of the Pillow implementation in hba_fast/augment/pil.py, f(img, m, rng) -> img
    # Name of the DALI implementation in hba_fast/augment/dali_ops.py, f(img, m) -> img; the affine and rotate ops
    # share "warp", which takes the sample's affine matrix (dali_ops.affine_matrices) instead of m.
    dali: str
    level: LevelRule | None = None  # the reference code's levels (None: no magnitude, or not an AutoAugment op)
    fill: tuple[int, int, int] | None = None  # RGB uint8 of the pixels the op fills in (None: it fills none)
    affine: tuple[int, str] | None = None  # kind affine: the AFFINE data entry (0..5) = m * scale ("1" | "width" |
    # "height"); the rest of the matrix is the identity
    table: int = 0  # kind table: which table (1 AutoContrast's, 2 Equalize's, 3 inverted, 4 solarised, 5 posterised)
    degenerate: int = 0  # kind blend: the degenerate image (1 the grey level, 2 the luma, 3 black, 4 SMOOTH)
    rounds: bool = False  # the magnitude is used rounded to an integer (a number of bits)

    @property
    def geometric(self) -> bool:
        """An affine op: a Pillow AFFINE matrix per sample, NEAREST sampling (DALI: one warp)."""
        return self.kind in ("affine", "rotate")


def _colour(rgb: tuple[int, int, int], like: torch.Tensor) -> torch.Tensor:
    """uint8 (1, 3, 1, 1) on like's device, made with fill kernels (torch.tensor(list) would be a synchronous copy)."""
    out = like.new_empty(1, 3, 1, 1)
    for c, v in enumerate(rgb):
        out[:, c] = v
    return out


# ---------------------------------------------------------------- geometric ops (affine, nearest, fill 128)

def affine_nearest(images: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Pillow's AFFINE + NEAREST transform with fill FILL; coeffs float64 (B, 6) = (a, b, c, d, e, f) per sample.

    Both of Pillow's samplers are evaluated for every image and the right one kept per image, so the work has
    fixed shapes: `ImagingScaleAffine` when b == d == 0 (source column floor(c + a/2 + x a), row likewise, in
    doubles; separable, so (B, W) and (B, H)), else `affine_fixed` (16.16 fixed point: A = floor(65536 v + 0.5),
    source = (A2 + x A0 + y A1) >> 16 with A2 = FIX(c + a/2 + b/2)), whose integer sums are formed by one batched
    float64 matmul: every term is an integer below 2^53, so the matmul is exact in any summation order.
    """
    b, ch, h, w = images.shape
    dev, f64 = images.device, torch.float64
    a0, a1, a2, a3, a4, a5 = coeffs.unbind(1)  # each (B,) float64
    xs = torch.arange(w, device=dev, dtype=f64)  # (W,)
    ys = torch.arange(h, device=dev, dtype=f64)  # (H,)

    # ImagingScaleAffine: doubles, source = COORD(c + a/2 + x*a).
    sx = torch.floor((a2 + a0 * 0.5)[:, None] + xs * a0[:, None])  # (B, W)
    sy = torch.floor((a5 + a4 * 0.5)[:, None] + ys * a4[:, None])  # (B, H)
    scale = torch.stack([sx[:, None, :].expand(b, h, w), sy[:, :, None].expand(b, h, w)], 1)  # (B, 2, H, W)

    # affine_fixed: rows (A2, A0, A1) and (A5, A3, A4) times the columns (1, x, y) of every pixel, then >> 16.
    fixed = torch.stack([a2 + a0 * 0.5 + a1 * 0.5, a0, a1, a5 + a3 * 0.5 + a4 * 0.5, a3, a4], 1)  # (B, 6)
    fixed = torch.floor(fixed * 65536.0 + 0.5).view(b, 2, 3)  # integers as float64
    grid = torch.stack([torch.ones_like(xs).expand(h, w), xs.expand(h, w), ys[:, None].expand(h, w)])  # (3, H, W)
    src = torch.floor(torch.bmm(fixed, grid.view(1, 3, h * w).expand(b, 3, h * w)) * (1.0 / 65536))  # (B, 2, HW)

    use_scale = ((a1 == 0) & (a3 == 0))[:, None, None]  # (B, 1, 1)
    src = torch.where(use_scale, scale.view(b, 2, h * w), src)  # (B, 2, HW) source (column, row), float64
    inside = (src >= 0).all(1) & (src[:, 0] < w) & (src[:, 1] < h)  # (B, HW)
    flat = torch.where(inside, src[:, 1] * w + src[:, 0], h * w).long()  # (B, HW); h*w: the fill pixel below
    padded = torch.cat([images.reshape(b, ch, h * w), _colour(FILL, images).view(1, ch, 1).expand(b, ch, 1)], 2)
    return padded.gather(2, flat[:, None].expand(b, ch, h * w)).view(b, ch, h, w)


def _coeffs(m: torch.Tensor, which: int, scale: float = 1.0) -> torch.Tensor:
    """Identity affine coefficients (B, 6) float64 with entry `which` set to m * scale."""
    coeffs = m.new_zeros(m.shape[0], 6, dtype=torch.float64)
    coeffs[:, 0] = 1.0
    coeffs[:, 4] = 1.0
    coeffs[:, which] = m.double() * scale
    return coeffs


def shear_x_coeffs(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """ShearX's AFFINE data (1, m, 0, 0, 1, 0), float64 (B, 6)."""
    return _coeffs(m, 1)


def shear_y_coeffs(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """ShearY's AFFINE data (1, 0, 0, m, 1, 0), float64 (B, 6)."""
    return _coeffs(m, 3)


def translate_x_coeffs(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """TranslateX's AFFINE data (1, 0, m * width, 0, 1, 0), float64 (B, 6)."""
    return _coeffs(m, 2, float(width))


def translate_y_coeffs(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """TranslateY's AFFINE data (1, 0, 0, 0, 1, m * height), float64 (B, 6)."""
    return _coeffs(m, 5, float(height))


def _round15(v: torch.Tensor) -> torch.Tensor:
    """Python's round(v, 15) for |v| <= 1 (Pillow rounds the rotation matrix so that e.g. cos(90 deg) is 0)."""
    return torch.round(v * 1e15) / 1e15


def rotate_coeffs(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Image.rotate(m)'s AFFINE data, float64 (B, 6): m degrees counter-clockwise about the centre (w/2, h/2).

    Follows Image.rotate's double arithmetic step by step (angle % 360, radians, round(., 15), the centre
    shift); torch's cos/sin may differ from libm's by an ulp, which changes a pixel only if a coefficient sits
    within an ulp of a 1/65536 boundary of the fixed-point sampler.
    """
    cx, cy = width / 2, height / 2
    angle = -(torch.remainder(m.double(), 360.0) * (math.pi / 180.0))  # (B,) float64
    cos, sin = _round15(torch.cos(angle)), _round15(torch.sin(angle))
    nsin = _round15(-torch.sin(angle))
    c = cos * -cx + sin * -cy + 0.0 + cx
    f = nsin * -cx + cos * -cy + 0.0 + cy
    # Pillow returns a copy for angle % 360 == 0 (its matrix would be the identity anyway).
    return torch.stack([cos, sin, c, nsin, cos, f], dim=1)  # (B, 6) float64


def shear_x(images: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """img.transform(size, AFFINE, (1, m, 0, 0, 1, 0), NEAREST, fillcolor=FILL)."""
    return affine_nearest(images, shear_x_coeffs(m, *images.shape[2:]))


def shear_y(images: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """img.transform(size, AFFINE, (1, 0, 0, m, 1, 0), NEAREST, fillcolor=FILL)."""
    return affine_nearest(images, shear_y_coeffs(m, *images.shape[2:]))


def translate_x(images: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """img.transform(size, AFFINE, (1, 0, m * width, 0, 1, 0), NEAREST, fillcolor=FILL)."""
    return affine_nearest(images, translate_x_coeffs(m, *images.shape[2:]))


def translate_y(images: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """img.transform(size, AFFINE, (1, 0, 0, 0, 1, m * height), NEAREST, fillcolor=FILL)."""
    return affine_nearest(images, translate_y_coeffs(m, *images.shape[2:]))


def rotate(images: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """img.rotate(m, NEAREST, fillcolor=FILL): m degrees counter-clockwise about the centre (see rotate_coeffs)."""
    return affine_nearest(images, rotate_coeffs(m, *images.shape[2:]))


# ---------------------------------------------------------------- lookup-table ops (per image, per channel)

def apply_lut(images: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Map every pixel through its image's and channel's table; lut integer (B, 3, 256) in [0, 255]."""
    b, ch, h, w = images.shape
    idx = images.reshape(b, ch, h * w).long()  # (B, 3, HW)
    return lut.to(torch.uint8).gather(2, idx).view(b, ch, h, w)


def histogram(images: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel histograms int64 (B, 3, 256)."""
    b, ch, h, w = images.shape
    idx = images.reshape(b, ch, h * w).long()
    hist = torch.zeros(b, ch, 256, dtype=torch.int64, device=images.device)
    return hist.scatter_add_(2, idx, torch.ones_like(idx))


def auto_contrast_lut(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """AutoContrast's tables float64 (B, 3, 256) from each channel's lowest / highest value lo, hi (B, 3)."""
    lo, hi = lo.double(), hi.double()
    scale = torch.full_like(hi, 255.0) / (hi - lo).clamp(min=1.0)  # not `255.0 / t`: torch computes reciprocal * 255
    offset = -lo * scale
    ix = torch.arange(256, device=lo.device, dtype=torch.float64)  # (256,)
    lut = torch.trunc(ix * scale[..., None] + offset[..., None]).clamp(0, 255)  # (B, 3, 256)
    return torch.where((hi > lo)[..., None], lut, ix)  # "don't bother" for flat channels


def auto_contrast(images: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """ImageOps.autocontrast: per channel lut[i] = clip(int(i * s - lo * s)), s = 255 / (hi - lo) in doubles."""
    flat = images.flatten(2)  # (B, 3, HW)
    return apply_lut(images, auto_contrast_lut(flat.amin(2), flat.amax(2)))  # lowest / highest non-empty bins


def invert(images: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """ImageOps.invert: 255 - x."""
    return 255 - images


def equalize_lut(hist: torch.Tensor) -> torch.Tensor:
    """Equalize's tables int64 (B, 3, 256) from each channel's histogram int64 (B, 3, 256)."""
    total = hist.sum(2, keepdim=True)  # (B, 3, 1)
    bins = torch.arange(256, device=hist.device)
    last = torch.where(hist > 0, bins, 0).amax(2, keepdim=True)  # (B, 3, 1) highest non-empty bin
    step = (total - hist.gather(2, last)) // 255  # (B, 3, 1); 0 also when a single bin is used
    before = hist.cumsum(2) - hist  # (B, 3, 256) exclusive cumulative count
    lut = (step // 2 + before) // step.clamp(min=1)
    return torch.where(step > 0, lut.clamp(0, 255), bins)  # Pillow's point() clips table entries to 8 bits


def equalize(images: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """ImageOps.equalize per channel: step = (N - h[last]) // 255, lut[i] = (step // 2 + sum_{j<i} h[j]) // step."""
    return apply_lut(images, equalize_lut(histogram(images)))


def solarize(images: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """ImageOps.solarize(img, 256 - m): invert pixels x >= 256 - m (compared exactly as m >= 256 - x)."""
    mm = m.float()[:, None, None, None]
    return torch.where(mm >= (256 - images.float()), 255 - images, images)


def posterize(images: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Clear the round(m) low bits (ImageOps.posterize(img, 8 - round(m)); m = 8 gives black)."""
    bits = torch.round(m.float()).clamp(0, 8).long()  # (B,)
    mask = (torch.bitwise_left_shift(torch.full_like(bits, 255), bits) & 255).to(torch.uint8)
    return images & mask[:, None, None, None]


# ---------------------------------------------------------------- ImageEnhance ops (blend with a degenerate image)

def blend(degenerate: torch.Tensor, images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Image.blend(degenerate, images, factor): uint8(clip(deg + f * (img - deg))) in float32, truncated."""
    deg = degenerate.float()
    f = factor.float()[:, None, None, None]
    out = deg + f * (images.float() - deg)  # two roundings, as Blend.c (no fused multiply-add)
    return out.clamp(0.0, 255.0).to(torch.uint8)  # values are >= 0, so the cast truncates as C does


def luma(images: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L: (19595 R + 38470 G + 7471 B + 0x8000) >> 16, int32 (B, 1, H, W) (sums stay below 2^24)."""
    x = images.int()
    return (x[:, 0:1] * 19595 + x[:, 1:2] * 38470 + x[:, 2:3] * 7471 + 0x8000) >> 16


def grey_level(lum: torch.Tensor) -> torch.Tensor:
    """Contrast's degenerate grey level int(mean(L) + 0.5), float64 (B,), from the luma (B, 1, H, W)."""
    mean = lum.flatten(1).sum(1).double() / lum[0].numel()  # (B,) correctly rounded, as ImageStat's mean
    return torch.floor(mean + 0.5)


def contrast(images: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """ImageEnhance.Contrast: blend with the constant int(mean(L) + 0.5)."""
    return blend(grey_level(luma(images))[:, None, None, None].expand_as(images), images, m)


def color(images: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """ImageEnhance.Color: blend with img.convert('L').convert('RGB')."""
    return blend(luma(images).expand_as(images), images, m)


def brightness(images: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """ImageEnhance.Brightness: blend with black."""
    return blend(torch.zeros_like(images), images, m)


# SMOOTH's weights as Filter.c holds them: float32(1) / float32(13) (exactly representable as Python floats).
SMOOTH_K1 = float(torch.tensor(1.0) / torch.tensor(13.0))
SMOOTH_K5 = float(torch.tensor(5.0) / torch.tensor(13.0))


def smooth(images: torch.Tensor) -> torch.Tensor:
    """ImageFilter.SMOOTH as Filter.c computes it: float32, ss = 0.5 + row(y+1) + row(y) + row(y-1), truncated.

    Each row term is (p[x-1] k0 + p[x] k1) + p[x+1] k2 with k = float32(1/13), float32(5/13) in the centre;
    the one-pixel border is copied from the input. The products p k1 and the k1-rows are formed once and read at
    their three offsets (the same float32 values Filter.c forms, in the same order).
    """
    x = images.float()
    p1 = x * SMOOTH_K1  # (B, 3, H, W) float32: Python scalars are applied in the tensor's dtype
    p5 = x[:, :, 1:-1, 1:-1] * SMOOTH_K5  # (B, 3, H-2, W-2)
    row1 = (p1[..., :-2] + p1[..., 1:-1]) + p1[..., 2:]  # (B, 3, H, W-2): every row with weights k1 k1 k1
    row5 = (p1[:, :, 1:-1, :-2] + p5) + p1[:, :, 1:-1, 2:]  # (B, 3, H-2, W-2): centre rows, k1 k5 k1
    ss = ((0.5 + row1[:, :, 2:]) + row5) + row1[:, :, :-2]  # rows y+1, y, y-1
    out = images.clone()
    out[:, :, 1:-1, 1:-1] = ss.clamp(0.0, 255.0).to(torch.uint8)
    return out


def sharpness(images: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """ImageEnhance.Sharpness: blend with the SMOOTH-filtered image."""
    return blend(smooth(images), images, m)


# ---------------------------------------------------------------- Cutout

def cutout_centres(
    batch: int, height: int, width: int, generator: torch.Generator | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """Uniform random square centres long (B, 2) = (row, col); the draw every cutout in this module makes."""
    u = torch.rand(batch, 2, generator=generator, device=device)  # (B, 2)
    rows = (u[:, 0] * height).long().clamp_max(height - 1)  # (B,) uniform over 0..H-1
    cols = (u[:, 1] * width).long().clamp_max(width - 1)
    return torch.stack([rows, cols], 1)


def cutout(
    images: torch.Tensor,
    size: torch.Tensor,
    generator: torch.Generator | None = None,
    centres: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fill a square of side size[i] (long (B,)) with CUTOUT_FILL at a random centre, clipped at the borders.

    The square covers rows [cy - s//2, cy - s//2 + s) and the same columns around cx; centres long (B, 2)
    default to `cutout_centres(...)` drawn from `generator`. A side of 0 leaves the image unchanged.
    """
    b, _, h, w = images.shape
    if centres is None:
        centres = cutout_centres(b, h, w, generator, images.device)
    size = size.to(images.device).long()
    top = (centres[:, 0] - size // 2)[:, None, None]  # (B, 1, 1)
    left = (centres[:, 1] - size // 2)[:, None, None]
    s = size[:, None, None]
    ys = torch.arange(h, device=images.device)[None, :, None]  # (1, H, 1)
    xs = torch.arange(w, device=images.device)[None, None, :]  # (1, 1, W)
    inside = (ys >= top) & (ys < top + s) & (xs >= left) & (xs < left + s)  # (B, H, W)
    return torch.where(inside[:, None], _colour(CUTOUT_FILL, images), images)


def cutout_size(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Cutout's side in pixels for magnitude m: round(m * min(H, W)), long (B,)."""
    return torch.round(m.float() * min(height, width)).clamp(0, min(height, width)).long()


def cutout_op(images: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The Cutout op: side round(m * min(H, W)), random centre from `generator`."""
    return cutout(images, cutout_size(m, images.shape[2], images.shape[3]), generator)


# ---------------------------------------------------------------- the table (SPEC 3 order) and the entry point

_AA = LevelRule  # the reference code's level rules, one per op below
_ENHANCE = _AA(1.8, offset=0.1)
OPS: tuple[OpSpec, ...] = (
    OpSpec("ShearX", 0.0, 0.3, True, True, 0.0, "shear factor", "affine", shear_x, "shear_x", "warp", _AA(0.3),
           FILL, affine=(1, "1")),
    OpSpec("ShearY", 0.0, 0.3, True, True, 0.0, "shear factor", "affine", shear_y, "shear_y", "warp", _AA(0.3),
           FILL, affine=(3, "1")),
    OpSpec("TranslateX", 0.0, 0.45, True, True, 0.0, "fraction of the width", "affine", translate_x, "translate_x",
           "warp", _AA(10, whole=True, pixels=True), FILL, affine=(2, "width")),
    OpSpec("TranslateY", 0.0, 0.45, True, True, 0.0, "fraction of the height", "affine", translate_y, "translate_y",
           "warp", _AA(10, whole=True, pixels=True), FILL, affine=(5, "height")),
    OpSpec("Rotate", 0.0, 30.0, True, True, 0.0, "degrees counter-clockwise", "rotate", rotate, "rotate", "warp",
           _AA(30, whole=True), FILL),
    OpSpec("AutoContrast", 0.0, 0.0, False, False, None, None, "table", auto_contrast, "auto_contrast",
           "auto_contrast", table=1),
    OpSpec("Invert", 0.0, 0.0, False, False, None, None, "table", invert, "invert", "invert", table=3),
    OpSpec("Equalize", 0.0, 0.0, False, False, None, None, "table", equalize, "equalize", "equalize", table=2),
    OpSpec("Solarize", 0.0, 255.0, False, True, 0.0, "invert pixels >= 256 - m", "table", solarize, "solarize",
           "solarize", _AA(256, whole=True), table=4),
    OpSpec("Posterize", 0.0, 8.0, False, True, 0.0, "clear round(m) low bits", "table", posterize, "posterize",
           "posterize", _AA(4, whole=True, reference_offset=4), table=5, rounds=True),
    OpSpec("Contrast", 0.1, 1.9, False, True, 1.0, "PIL ImageEnhance factor", "blend", contrast, "contrast",
           "contrast", _ENHANCE, degenerate=1),
    OpSpec("Color", 0.1, 1.9, False, True, 1.0, "PIL ImageEnhance factor", "blend", color, "color", "color",
           _ENHANCE, degenerate=2),
    OpSpec("Brightness", 0.1, 1.9, False, True, 1.0, "PIL ImageEnhance factor", "blend", brightness, "brightness",
           "brightness", _ENHANCE, degenerate=3),
    OpSpec("Sharpness", 0.1, 1.9, False, True, 1.0, "PIL ImageEnhance factor", "blend", sharpness, "sharpness",
           "sharpness", _ENHANCE, degenerate=4),
    OpSpec("Cutout", 0.0, 0.2, False, True, 0.0, "square side as a fraction of the shorter side, fill (125, 122, 113)",
           "cutout", cutout_op, "cutout", "cutout", _AA(20, whole=True, pixels=True), CUTOUT_FILL),
)
OP_INDEX: dict[str, int] = {op.name: k for k, op in enumerate(OPS)}


def check_images(images: object) -> torch.Tensor:
    """Raise a clear error unless `images` is a uint8 tensor (B, 3, H, W) with H, W >= 1."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor of dtype uint8, shape (B, 3, H, W); "
                        f"got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (B, 3, H, W), got dtype {images.dtype}; convert with .to(torch.uint8)")
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] < 1 or images.shape[3] < 1:
        raise ValueError(f"images must have shape (B, 3, H, W) (channels first, RGB), got {tuple(images.shape)}")
    return images


def apply_op(
    images: torch.Tensor,
    name: str,
    magnitude: torch.Tensor | float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply op `name` to every image with its own magnitude (SPEC 6).

    images uint8 (B, 3, H, W); magnitude float (B,) (a number or 0-d tensor is used for every sample); signed
    ops take the sign from the magnitude; ops without a magnitude ignore it; `generator` drives Cutout's
    centres. Returns uint8 (B, 3, H, W) on the images' device.
    """
    if name not in OP_INDEX:
        raise ValueError(f"unknown op {name!r}; valid names: {', '.join(OP_INDEX)}")
    check_images(images)
    b = images.shape[0]
    m = torch.as_tensor(magnitude, device=images.device)
    if m.dtype == torch.bool or m.is_complex():
        raise TypeError(f"magnitude must be real numbers, got dtype {m.dtype}")
    if m.dim() == 0:
        m = m.expand(b)
    if m.shape != (b,):
        raise ValueError(f"magnitude must have shape ({b},) (one per image) or be a scalar, got {tuple(m.shape)}")
    return OPS[OP_INDEX[name]].fn(images, m.float(), generator)


assert all(op.kind in KINDS for op in OPS)
assert all((op.affine is not None) == (op.kind == "affine") for op in OPS)
assert all((op.table > 0) == (op.kind == "table") and (op.degenerate > 0) == (op.kind == "blend") for op in OPS)
