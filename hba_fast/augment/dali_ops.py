"""The 15 augmentation ops as NVIDIA DALI graph pieces, with continuous per-sample magnitudes (SPEC section 3).

Every op here is a function `op(img, m) -> img` that builds DALI graph nodes: `img` is an HWC uint8 batch (CPU
or GPU), `m` a per-sample float32 scalar (an argument input, e.g. from `fn.external_source`), signed for the
geometric ops. Nothing is binned: unlike DALI's own `auto_aug`, which maps a magnitude bin to a value, each
sample's magnitude enters the arithmetic as is. Semantics are Pillow's, exactly where integer rounding allows:

- ShearX/ShearY/TranslateX/TranslateY/Rotate: one `fn.warp_affine` with the Pillow AFFINE matrix
  `(a, b, c, d, e, f)` used as DALI's inverse map (output pixel centre (x+.5, y+.5) -> source point, nearest
  pixel = floor), fill 128. The per-sample matrices are computed on the host (`affine_matrices`, float64 like
  Pillow; Rotate is `Image.rotate`'s matrix about (W/2, H/2)) and fed as an argument input: the five ops are
  one branch of the graph, which keeps the per-operator overhead of the conditional graph down.
- Brightness/Color/Contrast/Sharpness: `Image.blend(degenerate, img, f) = trunc(clip(deg + f (img - deg)))` in
  float32 as Pillow computes it; grey = (19595 R + 38470 G + 7471 B + 2^15) >> 16 (Pillow's "L"); Contrast's
  degenerate is the rounded mean grey; Sharpness's the SMOOTH filter ((sum of 3x3 neighbours + 4 centre + 6)
  // 13 on the interior, border pixels unchanged).
- AutoContrast: per channel lut(v) = int(v * 255/(hi-lo) - lo * 255/(hi-lo)) in float64, identity if hi == lo.
- Equalize: Pillow's lut(v) = (step // 2 + #{pixels < v}) // step, step = #{pixels < max} // 255 per channel
  (identity when step is 0): a uint8 one-hot (H, W, 3, 256) gives the histogram (sum) and applies the lut
  (max of one-hot * lut); the exclusive cumulative sum is a log-step scan of shifted slices. Exact; the one-hot
  is 37 MB for a 224x224 image (only the samples that drew Equalize pay it).
- Solarize: pixels >= 256 - m inverted; Posterize: the round(m) low bits cleared; Invert: 255 - v.
- Cutout: a round(m * min(H, W)) square, uniformly random centre, clipped at the border, fill (125, 122, 113).

Names, order, fills, which ops are affine (and how: `OpSpec.affine`, `.kind`) and which function here implements each
op come from the one op table, `hba_fast.augment.ops.OPS` (`OpSpec.fill`, `.geometric`, `.dali`); `OP_FNS` maps
each op's name to its function.
`apply_op_by_index(img, op, m, matrix)` selects per sample with DALI conditionals (needs `enable_conditionals=True`);
`dali_apply_op(images, name, magnitude, device)` runs one op on torch tensors (the `hba_fast.augment.ops.apply_op`
contract), with built pipelines cached per (name, batch size, shape, device).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import nvidia.dali.math as dmath
import torch
from nvidia.dali import fn, pipeline_def, types

from .ops import OP_INDEX, OPS, check_images

# The affine ops are one warp with a per-sample matrix: they must lead the table (apply_op_by_index tests
# op < NUM_GEOMETRIC) and share one grey fill (warp_affine takes a single fill value).
NUM_GEOMETRIC = sum(op.geometric for op in OPS)  # 5
assert all(op.geometric == (k < NUM_GEOMETRIC) for k, op in enumerate(OPS)), "the affine ops must lead OPS"
assert len({c for op in OPS[:NUM_GEOMETRIC] for c in op.fill}) == 1, "the affine ops must share one grey fill"
GEOMETRIC_FILL = OPS[0].fill[0]  # 128
CUTOUT_FILL = next(op.fill for op in OPS if op.kind == "cutout")  # (125, 122, 113)

_F32, _F64, _I32, _U8 = types.FLOAT, types.FLOAT64, types.INT32, types.UINT8


def _hw(img):
    """Per-sample (H, W) as float32 scalars (CPU nodes, usable as argument inputs for GPU operators)."""
    shape = img.shape()
    return fn.cast(shape[0], dtype=_F32), fn.cast(shape[1], dtype=_F32)


def _trunc_u8(x):
    """Pillow's float -> uint8 store: clip to [0, 255] and truncate (DALI's cast would round to nearest)."""
    return fn.cast(dmath.floor(dmath.clamp(x, 0.0, 255.0)), dtype=_U8)


def _round(x):
    """torch.round / Python round (ties to even) of float32 x, exactly: in float64, where x + 0.5 is exact (a
    float32 floor(x + 0.5) rounds 2.5 up and 0.49999997 to 1)."""
    x = fn.cast(x, dtype=_F64)
    r = dmath.floor(x + 0.5)
    odd = r - 2.0 * dmath.floor(r * 0.5)  # 1 where r is odd
    return r - ((r - x) == 0.5) * odd  # a tie rounded up to an odd integer goes down to the even one


def _blend(degenerate, img, factor):
    """Image.blend(degenerate, img, factor) in float32, as Pillow's ImagingBlend computes it."""
    deg = fn.cast(degenerate, dtype=_F32)
    return _trunc_u8(deg + factor * (fn.cast(img, dtype=_F32) - deg))


def _grey(img):
    """Pillow's RGB -> L conversion, (H, W, 1) int32."""
    x = fn.cast(img, dtype=_I32)
    return (x[:, :, 0:1] * 19595 + x[:, :, 1:2] * 38470 + x[:, :, 2:3] * 7471 + 32768) // 65536


def affine_matrices(ops: np.ndarray, mags: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pillow's AFFINE data (a, b, c, d, e, f) as (..., 2, 3) float32 for op indices `ops` with signed magnitudes
    `mags` (same shape); the identity where the op is not geometric. Computed on the host in float64, as Pillow.

    ShearX (1, m, 0, 0, 1, 0), ShearY (1, 0, 0, m, 1, 0), TranslateX (1, 0, m W, 0, 1, 0), TranslateY
    (1, 0, 0, 0, 1, m H), Rotate: `Image.rotate(m)`'s matrix, cos/sin of -m degrees rounded to 15 digits,
    about the centre (W/2, H/2).
    """
    m = np.asarray(mags, np.float64)
    ops = np.broadcast_to(np.asarray(ops), m.shape)
    out = np.zeros(m.shape + (2, 3))
    out[..., 0, 0] = out[..., 1, 1] = 1.0
    scales = {"1": 1.0, "width": float(width), "height": float(height)}
    for k, op in enumerate(OPS):
        if op.affine is not None:  # one entry of the AFFINE data is m * scale (OpSpec.affine)
            entry, scale = op.affine
            row, col = divmod(entry, 3)
            out[..., row, col] = np.where(ops == k, m * scales[scale], out[..., row, col])
    rot = np.isin(ops, [k for k, op in enumerate(OPS) if op.kind == "rotate"])
    angle = -np.radians(m)
    cos, sin = np.round(np.cos(angle), 15), np.round(np.sin(angle), 15)
    cx, cy = width / 2.0, height / 2.0
    rotation = np.stack([np.stack([cos, sin, cos * -cx + sin * -cy + cx], -1),
                         np.stack([-sin, cos, -sin * -cx + cos * -cy + cy], -1)], -2)  # (..., 2, 3)
    out[rot] = rotation[rot]
    return out.astype(np.float32)


def warp(img, matrix):
    """Pillow `transform(size, AFFINE, data, NEAREST, fillcolor=128)`: `matrix` (2, 3) per sample, the AFFINE data,
    maps output pixel centres to source points, which is DALI's inverse map with the same pixel-centre rule."""
    return fn.warp_affine(img, matrix=matrix, fill_value=GEOMETRIC_FILL, interp_type=types.INTERP_NN,
                          inverse_map=True)


def auto_contrast(img, m=None):
    lo = fn.cast(fn.reductions.min(img, axes=[0, 1]), dtype=_F64)  # (3,)
    hi = fn.cast(fn.reductions.max(img, axes=[0, 1]), dtype=_F64)
    spread = hi > lo  # (3,) bool
    scale = 255.0 / dmath.max(hi - lo, 1.0)
    offset = (0.0 - lo) * scale
    mapped = dmath.floor(dmath.clamp(fn.cast(img, dtype=_F64) * scale + offset, 0.0, 255.0))
    x = fn.cast(img, dtype=_F64)
    return fn.cast(x + spread * (mapped - x), dtype=_U8)


def invert(img, m=None):
    return fn.cast(255 - fn.cast(img, dtype=_I32), dtype=_U8)


def _exclusive_cumsum(hist):
    """(3, 256) -> (3, 256): sum of the bins strictly below each level (Hillis-Steele scan by shifted slices)."""
    total = fn.slice(hist, start=[0, -1], shape=[3, 256], axes=[0, 1], out_of_bounds_policy="pad", fill_values=0)
    shift = 1
    while shift < 256:
        total = total + fn.slice(total, start=[0, -shift], shape=[3, 256], axes=[0, 1],
                                 out_of_bounds_policy="pad", fill_values=0)
        shift *= 2
    return total


def equalize(img, m=None):
    onehot = fn.one_hot(img, num_classes=256, dtype=_U8)  # (H, W, 3, 256)
    hist = fn.cast(fn.reductions.sum(onehot, axes=[0, 1]), dtype=_I32)  # (3, 256)
    below = _exclusive_cumsum(hist)  # (3, 256): #{pixels < v}
    n = fn.reductions.sum(hist, axes=[1])  # (3,) pixels per channel
    top = fn.reductions.max(img, axes=[0, 1])  # (3,)
    at_top = fn.reductions.sum(fn.cast(img == top, dtype=_I32), axes=[0, 1])  # (3,)
    step = (n - at_top) // 255  # (3,) Pillow: (count - count of the last level) // 255
    safe = fn.expand_dims(dmath.max(step, 1), axes=[1])  # (3, 1)
    levels = fn.cast(fn.reductions.sum(hist * 0, axes=[0], dtype=_I32), dtype=_I32)  # (256,) zeros, for shape
    identity = fn.cast(_exclusive_cumsum(fn.stack(levels + 1, levels + 1, levels + 1)), dtype=_I32)  # (3, 256) = v
    lut = fn.expand_dims(step > 0, axes=[1]) * ((safe // 2 + below) // safe - identity) + identity  # (3, 256)
    lut = fn.cast(dmath.clamp(lut, 0, 255), dtype=_U8)
    out = fn.reductions.max(onehot * lut, axes=[3])  # gather lut[c, v] per pixel: (H, W, 3) uint8
    return fn.reshape(out, layout="HWC")  # the reduction drops the layout; conditionals need it to match


def solarize(img, m):
    x = fn.cast(img, dtype=_I32)
    flip = m >= (256.0 - fn.cast(img, dtype=_F32))  # the comparison hba_fast.augment.ops makes, same float rounding
    return fn.cast(x + flip * (255 - 2 * x), dtype=_U8)


def posterize(img, m):
    bits = dmath.clamp(_round(m), 0.0, 8.0)
    mask = fn.cast(256.0 - dmath.pow(2.0, bits), dtype=_I32)  # keeps the 8 - bits high bits
    return fn.cast(fn.cast(img, dtype=_I32) & mask, dtype=_U8)


def contrast(img, m):
    grey = _grey(img)
    mean = fn.reductions.sum(grey, axes=[0, 1, 2], dtype=types.INT64)
    h, w = _hw(img)
    level = dmath.floor(fn.cast(mean, dtype=_F64) / fn.cast(h * w, dtype=_F64) + 0.5)
    return _blend(fn.cast(level, dtype=_F32), img, m)


def color(img, m):
    return _blend(_grey(img), img, m)


def brightness(img, m):
    return _trunc_u8(fn.cast(img, dtype=_F32) * m)


def sharpness(img, m):
    x = fn.cast(img, dtype=_I32)
    hw = fn.cast(img.shape()[0:2], dtype=_I32)  # (2,)
    inner = hw - 2
    zero = hw * 0
    total = None
    for dy in range(3):
        for dx in range(3):
            anchor = fn.stack(zero[0] + dy, zero[1] + dx)
            part = fn.slice(x, anchor, inner, axes=[0, 1])
            part = part * 5 if (dy, dx) == (1, 1) else part
            total = part if total is None else total + part
    smooth = (total + 6) // 13
    centre = fn.slice(x, zero + 1, inner, axes=[0, 1])
    diff = fn.cast(_blend(smooth, centre, m), dtype=_I32) - centre
    diff = fn.slice(diff, zero - 1, hw, axes=[0, 1], out_of_bounds_policy="pad", fill_values=0)
    return fn.cast(x + diff, dtype=_U8)


def cutout(img, m):
    h, w = _hw(img)
    side = fn.cast(dmath.clamp(_round(m * dmath.min(h, w)), 0.0, dmath.min(h, w)), dtype=_F32)  # as cutout_size
    cy = dmath.min(dmath.floor(fn.random.uniform(range=[0.0, 1.0]) * h), h - 1.0)  # as ops.cutout_centres
    cx = dmath.min(dmath.floor(fn.random.uniform(range=[0.0, 1.0]) * w), w - 1.0)
    half = dmath.floor(side * 0.5)
    anchor = fn.stack(cy - half, cx - half)
    shape = fn.stack(side, side)
    return fn.erase(img, anchor=anchor, shape=shape, axis_names="HW", fill_value=list(CUTOUT_FILL))


def _resolve(spec) -> Callable:
    """The function of this module that `spec.dali` names (a wrong table is a bug, not a missing DALI)."""
    impl = globals().get(spec.dali or "")
    if not callable(impl):
        raise LookupError(f"hba_fast.augment.ops.OPS: op {spec.name} names DALI implementation {spec.dali!r}, which "
                          f"is not a function of {__name__}; add it here or fix OpSpec.dali")
    return impl


OP_FNS: dict[str, Callable] = {op.name: _resolve(op) for op in OPS}  # name -> f(img, m), or warp(img, matrix)
assert all(OP_FNS[op.name] is warp for op in OPS[:NUM_GEOMETRIC]), "the affine ops run as one warp"
_PIXEL_OPS = tuple((k, OP_FNS[op.name]) for k, op in enumerate(OPS) if not op.geometric)  # (op index, f)


def apply_op_by_index(img, op, m, matrix):
    """Per sample, apply op `OPS[op]` with magnitude m; op < 0 (or >= 15) leaves the sample unchanged.

    `op` is a per-sample int32 scalar node, `m` a float32 one and `matrix` the (2, 3) `affine_matrices` entry for
    (op, m). Must be called inside a pipeline definition built with `enable_conditionals=True`: each `if` splits
    the batch, so an op only runs on its samples; the geometric ops share one warp.
    """
    if (op >= 0) & (op < NUM_GEOMETRIC):
        img = warp(img, matrix)
    for index, impl in _PIXEL_OPS:
        if op == index:
            img = impl(img, m)
    return img


def to_torch(tensor_list, device: torch.device | str = "cpu") -> torch.Tensor:
    """A dense DALI TensorList (CPU or GPU) as a torch tensor; GPU data is copied once into a CUDA tensor."""
    from nvidia.dali.backend import TensorListGPU
    from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

    dense = tensor_list.as_tensor()
    dtype = to_torch_type[dense.dtype]
    if isinstance(tensor_list, TensorListGPU):
        out = torch.empty(dense.shape(), dtype=dtype, device=torch.device(device))
        feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(out.device))
        return out
    return torch.from_numpy(np.array(dense)).to(device)


_CACHE: dict[tuple, object] = {}


def _op_pipeline(name: str, batch_size: int, device: str, device_id: int | None, seed: int):
    @pipeline_def(batch_size=batch_size, num_threads=2, device_id=device_id, seed=seed,
                  prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
    def one_op():
        img = fn.external_source(name="images", layout="HWC", dtype=_U8, ndim=3)
        m = fn.external_source(name="mags", dtype=_F32, ndim=0)
        matrix = fn.external_source(name="matrix", dtype=_F32, ndim=2)
        if device == "gpu":
            img = img.gpu()
        out = OP_FNS[name](img, matrix if OPS[OP_INDEX[name]].geometric else m)
        return out, m, matrix  # returned so that every input stays in the graph

    pipe = one_op()
    pipe.build()
    return pipe


def dali_apply_op(images: torch.Tensor, name: str, magnitude: torch.Tensor, device: str = "cpu",
                  seed: int = 0) -> torch.Tensor:
    """`hba_fast.augment.ops.apply_op` through DALI: images uint8 (B, 3, H, W), magnitude float (B,) -> uint8
    (B, 3, H, W).

    `device` picks DALI's CPU or GPU operators; the result comes back on the input's device.
    """
    if name not in OP_INDEX:
        raise ValueError(f"unknown op {name!r}; valid names: {', '.join(OP_INDEX)}")
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    check_images(images)  # the errors hba_fast.augment.ops.apply_op raises
    batch = images.shape[0]
    magnitude = torch.as_tensor(magnitude, dtype=torch.float32).reshape(-1).expand(batch)
    device_id = None  # DALI's GPU operators run on the images' GPU (the current one for CPU images)
    if device == "gpu":
        device_id = images.device.index if images.is_cuda and images.device.index is not None \
            else torch.cuda.current_device()
    key = (name, batch, tuple(images.shape[2:]), device, device_id, seed)
    if key not in _CACHE:
        _CACHE[key] = _op_pipeline(name, batch, device, device_id, seed)
    pipe = _CACHE[key]
    hwc = images.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    pipe.feed_input("images", list(hwc), layout="HWC")
    mags = magnitude.cpu().numpy()
    pipe.feed_input("mags", [np.float32(v) for v in mags])
    matrices = affine_matrices(np.full(batch, OP_INDEX[name]), mags, images.shape[2], images.shape[3])
    pipe.feed_input("matrix", list(matrices))
    out, _, _ = pipe.run()
    return to_torch(out, images.device).permute(0, 3, 1, 2).contiguous()
