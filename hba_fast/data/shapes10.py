"""shapes10: the built-in generated dataset (SPEC section 7), 10 classes told apart by shape.

Classes (label: name): 0 disc, 1 square, 2 triangle, 3 cross, 4 ring, 5 star, 6 crescent, 7 frame
(hollow square), 8 half_disc, 9 ell (an L). Everything else is nuisance that augmentation is about:
foreground / background colour, scale, aspect, position, rotation, shear, a background texture of two
sinusoidal gratings, a multiplicative lighting gradient with a global gain, and Gaussian pixel noise.

Rendering (vectorised torch on the CPU, a chunk of images at a time). Pixel centres get coordinates p in
which the shorter image side spans [-1, 1]. Each image has an affine map M = R(theta) Shear(k) diag(s a, s / a)
and a centre c; the shape is tested in local coordinates q = M^-1 (p - c) with a signed distance function
sdf(q) of the unit shape (negative inside). Coverage, anti-aliased over about one pixel:

    alpha = clamp(0.5 - sdf(q) * s / pixel,  0, 1),   pixel = 2 / min(H, W)
    image = gain (1 + g . p) ((bg + texture) (1 - alpha) + fg alpha) + sigma_n N(0, 1),   clipped, x 255, rounded

Determinism: image i of a stream depends only on (seed, stream, i): parameters and noise are drawn from a
generator seeded by (seed, stream, i // CHUNK), so any prefix of a larger set equals the smaller set. Labels
are i % 10 (exactly balanced over every 10 consecutive images). Streams: "train" and "test" (disjoint draws).

In memory: `make_shapes10(n, size, seed, split) -> (images uint8 (N, 3, H, W), labels int64 (N,))`.
On disk: `write_jpeg_tree(root, n_per_class, size, seed)` writes root/{train,val}/<k>_<name>/NNNNN.jpg, the
class-folder layout of the `folder` dataset and of DALI's fn.readers.file. CLI for benchmarks:

    python -m hba_fast.data.shapes10 OUT_DIR --size 500x375 --per-class 100
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

CLASS_NAMES = ("disc", "square", "triangle", "cross", "ring", "star", "crescent", "frame", "half_disc", "ell")
NUM_CLASSES = len(CLASS_NAMES)
CHUNK = 32  # images per RNG draw; fixed, so image i never depends on how many images are made
_STREAMS = {"train": 0, "test": 1, "val": 2}
_RENDER_PIXELS = 1 << 21  # pixels rasterised per group of chunks (bounds memory, amortises per-op overhead)


def _parse_size(size: int | tuple[int, int] | str) -> tuple[int, int]:
    """int -> (s, s); (w, h); 'WxH' -> (w, h). Returns (width, height)."""
    if isinstance(size, str):
        parts = size.lower().split("x")
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"size must be an int or 'WIDTHxHEIGHT' (e.g. 500x375), got {size!r}")
        size = (int(parts[0]), int(parts[1]))
    if isinstance(size, int):
        size = (size, size)
    w, h = (int(v) for v in size)
    if w < 8 or h < 8:
        raise ValueError(f"shapes10 images must be at least 8x8 pixels, got {w}x{h}")
    return w, h


# ---- signed distance functions of the unit shapes, q = (x, y) local coordinates, each (n, H, W) ----

def _box(x, y, cx, cy, hx, hy):
    qx, qy = (x - cx).abs() - hx, (y - cy).abs() - hy
    return torch.hypot(qx.clamp(min=0), qy.clamp(min=0)) + torch.maximum(qx, qy).clamp(max=0)


def _circle(x, y, cx, cy, r):
    return torch.hypot(x - cx, y - cy) - r


def _polygon(x, y, n, radius):
    """Regular n-gon with circumradius `radius`: max over edges of (q . normal) - apothem (exact inside)."""
    d = None
    for k in range(n):
        a = 2 * math.pi * (k + 0.5) / n - math.pi / 2
        e = x * math.cos(a) + y * math.sin(a)
        d = e if d is None else torch.maximum(d, e)
    return d - radius * math.cos(math.pi / n)


def _star(x, y, points=5, outer=1.0, inner=0.45):
    """Star polygon: fold the angle onto [0, pi / points] from the nearest tip, then the signed distance to the
    straight edge from the tip (outer, 0) to the notch inner * (cos, sin)(pi / points) (exact near the edges)."""
    sector = 2 * math.pi / points
    phi = torch.atan2(x, -y)  # tips point up
    a = (torch.remainder(phi + sector / 2, sector) - sector / 2).abs()  # angle from the nearest tip
    rho = torch.hypot(x, y)
    qx, qy = rho * torch.cos(a), rho * torch.sin(a)
    ex, ey = inner * math.cos(sector / 2) - outer, inner * math.sin(sector / 2)  # edge direction tip -> notch
    norm = math.hypot(ex, ey)
    return ((qx - outer) * ey - qy * ex) / norm  # outward normal (ey, -ex) / |e|


def _sdf(label: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if label == 0:  # disc
        return _circle(x, y, 0, 0, 0.85)
    if label == 1:  # square
        return _box(x, y, 0, 0, 0.72, 0.72)
    if label == 2:  # triangle
        return _polygon(x, y, 3, 1.05)
    if label == 3:  # cross
        return torch.minimum(_box(x, y, 0, 0, 0.9, 0.28), _box(x, y, 0, 0, 0.28, 0.9))
    if label == 4:  # ring
        return (torch.hypot(x, y) - 0.68).abs() - 0.22
    if label == 5:  # star
        return _star(x, y)
    if label == 6:  # crescent: a disc minus an offset disc
        return torch.maximum(_circle(x, y, 0, 0, 0.9), -_circle(x, y, 0.5, -0.1, 0.72))
    if label == 7:  # frame: a square minus a smaller square
        return torch.maximum(_box(x, y, 0, 0, 0.8, 0.8), -_box(x, y, 0, 0, 0.42, 0.42))
    if label == 8:  # half disc
        return torch.maximum(_circle(x, y, 0, 0.35, 0.95), y - 0.35)
    if label == 9:  # ell
        return torch.minimum(_box(x, y, -0.42, 0, 0.28, 0.85), _box(x, y, 0, 0.6, 0.7, 0.25))
    raise AssertionError(label)


def _chunk_generator(seed: int, stream: int, chunk: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, stream, chunk]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _draw_params(labels: torch.Tensor, width: int, height: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Every random draw of len(labels) images, from `g` in a fixed order: {name: (n, ...)}."""
    n = labels.numel()

    def u(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand((n, *shape), generator=g)

    p = {"labels": labels}
    # Geometry: the shape's radius s (shorter side = 2), aspect, rotation, shear, centre.
    p["s"], p["aspect"], p["theta"], p["shear"] = u(0.32, 0.62), torch.exp(u(-0.2, 0.2)), u(0, 2 * math.pi), \
        u(-0.3, 0.3)
    ext_x, ext_y = width / min(width, height), height / min(width, height)
    p["cx"] = u(-1, 1) * (ext_x - p["s"]).clamp(min=0) * 0.8
    p["cy"] = u(-1, 1) * (ext_y - p["s"]).clamp(min=0) * 0.8
    # Appearance: colours with a guaranteed luminance gap, texture, lighting, noise.
    bg, fg = u(0.1, 0.9, 3), u(0.0, 1.0, 3)
    lum = torch.tensor([0.299, 0.587, 0.114])
    push = torch.where(bg @ lum < 0.5, 1.0, -1.0) * 0.35
    p["bg"], p["fg"] = bg, torch.where((((fg - bg) @ lum).abs() < 0.2)[:, None], (fg + push[:, None]).clamp(0, 1), fg)
    p["tex_amp"], p["tex_freq"], p["tex_dir"], p["tex_phase"] = \
        u(0, 0.12, 2), u(1.0, 6.0, 2), u(0, math.pi, 2), u(0, 2 * math.pi, 2)
    p["gain"], p["grad"], p["noise_std"] = u(0.7, 1.2), u(-0.25, 0.25, 2), u(0.0, 0.06)
    p["noise"] = torch.randn((n, 3, height, width), generator=g)
    return p


def _render(p: dict[str, torch.Tensor], width: int, height: int) -> torch.Tensor:
    """Rasterise drawn parameters (see `_draw_params`) into uint8 images (n, 3, H, W)."""
    labels, s, n = p["labels"], p["s"], p["labels"].numel()
    # Pixel-centre coordinates, shorter side spanning [-1, 1]: px (W,), py (H,).
    half = min(width, height) / 2
    px = (torch.arange(width, dtype=torch.float32) + 0.5 - width / 2) / half
    py = (torch.arange(height, dtype=torch.float32) + 0.5 - height / 2) / half
    X, Y = px[None, None, :], py[None, :, None]  # (1, 1, W), (1, H, 1)

    # Inverse of M = R(theta) Shear(k) diag(s a, s / a), applied to p - c: local coordinates (n, H, W).
    cos, sin, shear = torch.cos(p["theta"]), torch.sin(p["theta"]), p["shear"]
    m = torch.stack([torch.stack([cos, cos * shear - sin], -1), torch.stack([sin, sin * shear + cos], -1)], -2)
    m = m * torch.stack([s * p["aspect"], s / p["aspect"]], -1)[:, None, :]  # scales the columns
    minv = torch.linalg.inv(m)  # (n, 2, 2)
    dx, dy = X - p["cx"][:, None, None], Y - p["cy"][:, None, None]  # (n, 1, W), (n, H, 1)
    lx = minv[:, 0, 0, None, None] * dx + minv[:, 0, 1, None, None] * dy  # (n, H, W)
    ly = minv[:, 1, 0, None, None] * dx + minv[:, 1, 1, None, None] * dy
    sdf = torch.empty((n, height, width))
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().squeeze(1)
        sdf[idx] = _sdf(c, lx[idx], ly[idx])
    alpha = (0.5 - sdf * (s * half)[:, None, None]).clamp(0, 1)[:, None]  # (n, 1, H, W); sdf in pixels

    texture = 0
    for k in range(2):
        d, f = p["tex_dir"][:, k, None, None], p["tex_freq"][:, k, None, None]
        proj = X * torch.cos(d) + Y * torch.sin(d)
        texture = texture + p["tex_amp"][:, k, None, None] * torch.sin(f * math.pi * proj
                                                                       + p["tex_phase"][:, k, None, None])
    back = p["bg"][:, :, None, None] + texture[:, None]  # (n, 3, H, W)
    img = back * (1 - alpha) + p["fg"][:, :, None, None] * alpha
    grad = p["grad"]
    light = p["gain"][:, None, None] * (1 + grad[:, 0, None, None] * X + grad[:, 1, None, None] * Y)  # (n, H, W)
    img = img * light[:, None] + p["noise_std"][:, None, None, None] * p["noise"]
    return (img.clamp(0, 1) * 255).round_().to(torch.uint8)


def iter_shapes10(n: int, size: int | tuple[int, int] | str = 32, seed: int = 0, split: str = "train",
                  start: int = 0) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield (first index, images uint8 (c, 3, H, W), labels int64 (c,)) for images start..start+n-1 of a stream."""
    if split not in _STREAMS:
        raise ValueError(f"split must be one of {sorted(_STREAMS)}, got {split!r}")
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
    width, height = _parse_size(size)
    end = start + n
    chunks = list(range(start // CHUNK, -(-end // CHUNK)))
    per_group = max(1, _RENDER_PIXELS // (CHUNK * width * height))  # RNG chunks rasterised together
    for i in range(0, len(chunks), per_group):
        with _one_thread():
            group = chunks[i:i + per_group]
            drawn = [_draw_params(torch.arange(c * CHUNK, (c + 1) * CHUNK) % NUM_CLASSES, width, height,
                                  _chunk_generator(seed, _STREAMS[split], c)) for c in group]
            lo, hi = group[0] * CHUNK, (group[-1] + 1) * CHUNK
            a, b = max(lo, start), min(hi, end)
            params = {k: torch.cat([d[k] for d in drawn])[a - lo:b - lo] for k in drawn[0]}
            images = _render(params, width, height)
        yield a, images, params["labels"]


@contextmanager
def _one_thread():
    """One intra-op thread: these element-wise ops are small, and OpenMP's spin-waiting makes them many times
    slower on a loaded machine (measured 0.7 s -> 28 s for 14k 32x32 images on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def make_shapes10(n: int, size: int | tuple[int, int] | str = 32, seed: int = 0,
                  split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """n images of a stream, in memory: (images uint8 (n, 3, H, W), labels int64 (n,)), labels = index % 10."""
    width, height = _parse_size(size)
    images = torch.empty((n, 3, height, width), dtype=torch.uint8)
    labels = torch.empty((n,), dtype=torch.int64)
    for first, imgs, labs in iter_shapes10(n, (width, height), seed, split):
        images[first:first + len(labs)] = imgs
        labels[first:first + len(labs)] = labs
    return images, labels


def class_dir_names() -> list[str]:
    """Folder names of the JPEG tree, `<k>_<name>`, which sort in label order."""
    return [f"{k}_{name}" for k, name in enumerate(CLASS_NAMES)]


def write_jpeg_tree(root: str | Path, n_per_class: int, size: int | tuple[int, int] | str = 32, seed: int = 0,
                    quality: int = 90, val_per_class: int | None = None) -> dict[str, int]:
    """Write root/train/<k>_<name>/NNNNN.jpg (n_per_class per class) and root/val/... (val_per_class per class,
    default max(1, n_per_class // 5), drawn from the disjoint "test" stream). Returns {split: images written}."""
    from PIL import Image

    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    val_per_class = max(1, n_per_class // 5) if val_per_class is None else val_per_class
    root = Path(root)
    dirs = class_dir_names()
    written = {}
    for split, per_class, stream in (("train", n_per_class, "train"), ("val", val_per_class, "test")):
        for d in dirs:
            (root / split / d).mkdir(parents=True, exist_ok=True)
        for first, images, labels in iter_shapes10(per_class * NUM_CLASSES, size, seed, stream):
            hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
            for j in range(len(labels)):
                path = root / split / dirs[int(labels[j])] / f"{first + j:05d}.jpg"
                Image.fromarray(hwc[j]).save(path, quality=quality)
        written[split] = per_class * NUM_CLASSES
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hba_fast.data.shapes10",
                                     description="Write the shapes10 dataset as a class-folder JPEG tree.")
    parser.add_argument("out_dir")
    parser.add_argument("--size", default="32", help="image size: N or WIDTHxHEIGHT (default 32)")
    parser.add_argument("--per-class", type=int, default=100, help="training images per class (default 100)")
    parser.add_argument("--val-per-class", type=int, default=None, help="validation images per class "
                        "(default per-class // 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    args = parser.parse_args(argv)
    w, h = _parse_size(args.size)
    written = write_jpeg_tree(args.out_dir, args.per_class, (w, h), args.seed, args.quality, args.val_per_class)
    print(f"wrote {args.out_dir}: " + ", ".join(f"{n} {s}" for s, n in written.items()) + f" images, {w}x{h}")


if __name__ == "__main__":
    main()
