"""The per-dataset baseline augmentations (the lambda-independent parts), batched in torch on any device.

Recipes (SPEC 3, paper 4.2; `policy` is the per-sample PBA policy, applied by the pipeline in between):
    cifar     policy -> pad-4 random crop (zero fill) -> horizontal flip -> standardise -> Cutout 16x16
    svhn      policy -> standardise -> Cutout 20x20
    imagenet  random-resized-crop -> policy -> flip -> colour jitter (0.4, 0.4, 0.4) -> PCA lighting (0.1)
              -> standardise
    none      policy -> standardise
Each is one `Recipe` record in `RECIPES` (keyed by name); both backends (these torch functions and the DALI
graph, `dali_pipeline._recipe_tail`) read its fields and run the steps a record turns on in this fixed order:
random-resized-crop | policy | random crop | flip | colour jitter | PCA lighting | standardise | Cutout.
`pre_policy` runs what comes before the policy (uint8 in / out), `post_policy` the rest (uint8 in, float32
standardised out). Clean (evaluation) batches are only standardised: in-memory images are already at the
training size (folder images are resized and centre-cropped when decoded).

Conventions, per op (all per sample, every random draw from the caller's generator on the images' device):
- random crop: out[y, x] = img[y + dy, x + dx], dy, dx uniform in {-pad..pad}, 0 outside the image (as
  torchvision RandomCrop(H, padding=pad) with fill 0).
- Cutout (DeVries & Taylor 2017, PBA): after standardising, rows [cy - s//2, cy - s//2 + s) and the same
  columns around a uniform centre (cy, cx), clipped at the borders, are set to 0 (the dataset mean).
- random-resized-crop (torchvision semantics): area fraction in [0.08, 1], log-uniform aspect in [3/4, 4/3],
  10 attempts then a centre crop; the box is resampled to the output size with bilinear interpolation.
- colour jitter: brightness x * b, contrast blend with the image's mean grey, saturation blend with the
  pixel's grey, factors uniform in [1 - s, 1 + s] (s = `Recipe.jitter`), in that fixed order (torchvision
  shuffles the order).
- PCA lighting (AlexNet; Fast AutoAugment's ImageNet recipe): x + V (alpha * eigval), alpha ~ N(0, s^2)
  (s = `Recipe.lighting_std`; V, eigval = `PCA_EIGVEC`, `PCA_EIGVAL`).
Images in [0, 1] for jitter and lighting; standardise(x) = (x / 255 - mean) / std per channel.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn.functional as F

from ..errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """One dataset's baseline augmentation; a step whose field is False or 0 is skipped."""

    name: str
    resized_crop: bool  # random-resized-crop to the image size before the policy
    crop_pad: int  # px: random crop with this zero padding after the policy (0: no crop)
    flip: bool  # horizontal flip with probability 0.5
    jitter: float  # colour jitter strength s: brightness, contrast, saturation factors uniform in [1 - s, 1 + s]
    lighting_std: float  # std of PCA lighting's alpha (images in [0, 1])
    cutout_size: int  # px: side of the fixed Cutout square after standardising (0: none)


RECIPES: Mapping[str, Recipe] = MappingProxyType({r.name: r for r in (
    Recipe("cifar", resized_crop=False, crop_pad=4, flip=True, jitter=0.0, lighting_std=0.0, cutout_size=16),
    Recipe("svhn", resized_crop=False, crop_pad=0, flip=False, jitter=0.0, lighting_std=0.0, cutout_size=20),
    Recipe("imagenet", resized_crop=True, crop_pad=0, flip=True, jitter=0.4, lighting_std=0.1, cutout_size=0),
    Recipe("none", resized_crop=False, crop_pad=0, flip=False, jitter=0.0, lighting_std=0.0, cutout_size=0),
)})
CUTOUT_SIZE = {name: r.cutout_size for name, r in RECIPES.items() if r.cutout_size}  # {"cifar": 16, "svhn": 20}
# ImageNet RGB PCA (AlexNet), as in Fast AutoAugment's data code: eigenvalues and eigenvectors (columns).
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))
_GREY = (0.2989, 0.587, 0.114)
_IMAGENET = RECIPES["imagenet"]  # the defaults of color_jitter and pca_lighting


def get_recipe(name: str) -> Recipe:
    """The record of recipe `name`; ConfigError naming the valid ones otherwise."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; data.recipe must be 'auto' or one of {tuple(RECIPES)}")
    return RECIPES[name]


def resolve_recipe(data_cfg) -> str:
    """`auto` -> svhn for svhn, imagenet for folder datasets or image_size >= 64, cifar otherwise."""
    recipe = data_cfg.recipe
    if recipe == "auto":
        if data_cfg.dataset == "svhn":
            return "svhn"
        return "imagenet" if (data_cfg.dataset == "folder" or data_cfg.image_size >= 64) else "cifar"
    if recipe not in RECIPES:
        raise ConfigError(f"data.recipe must be 'auto' or one of {tuple(RECIPES)}, got {recipe!r}")
    return recipe


def _uniform(shape, generator, device, lo=0.0, hi=1.0) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=generator, device=device)


def random_crop(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift every image by (dy, dx) uniform in {-pad..pad}^2 with zero fill; (B, C, H, W) any dtype."""
    b, c, h, w = images.shape
    shift = torch.randint(-pad, pad + 1, (b, 2), generator=generator, device=images.device)  # (B, 2) = (dy, dx)
    ys = torch.arange(h, device=images.device)[None] + shift[:, :1]  # (B, H) source rows
    xs = torch.arange(w, device=images.device)[None] + shift[:, 1:]  # (B, W) source cols
    rows = images.gather(2, ys.clamp(0, h - 1)[:, None, :, None].expand(b, c, h, w))
    out = rows.gather(3, xs.clamp(0, w - 1)[:, None, None, :].expand(b, c, h, w))
    valid = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]  # (B, H, W)
    return out * valid[:, None].to(out.dtype)


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability p."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < p  # (B,)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def standardise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (or float pixel / 255 when images are floating) (B, 3, H, W) -> float32 (x / 255 - mean) / std."""
    x = images.float() / 255 if not images.is_floating_point() else images.float()
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def cutout_fixed(images: torch.Tensor, size: int, generator: torch.Generator | None = None,
                 fill: float = 0.0) -> torch.Tensor:
    """Set a size x size square at a uniform random centre (clipped at the borders) to `fill`, per image."""
    b, _, h, w = images.shape
    u = torch.rand((b, 2), generator=generator, device=images.device)  # (B, 2)
    top = (u[:, 0] * h).long() - size // 2  # (B,): centre row cy uniform in 0..H-1, minus half the side
    left = (u[:, 1] * w).long() - size // 2
    ys = torch.arange(h, device=images.device)[None, :, None]  # (1, H, 1)
    xs = torch.arange(w, device=images.device)[None, None, :]  # (1, 1, W)
    inside = ((ys >= top[:, None, None]) & (ys < top[:, None, None] + size)
              & (xs >= left[:, None, None]) & (xs < left[:, None, None] + size))  # (B, H, W)
    return images.masked_fill(inside[:, None], fill)


def random_resized_crop_boxes(b: int, h: int, w: int, generator: torch.Generator | None, device,
                              scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts: int = 10) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params for a batch: long (B, 4) = (top, left, height, width)."""
    area = h * w
    target = area * _uniform((b, attempts), generator, device, *scale)
    aspect = torch.exp(_uniform((b, attempts), generator, device, math.log(ratio[0]), math.log(ratio[1])))
    cw = torch.sqrt(target * aspect).round().long()  # (B, attempts)
    ch = torch.sqrt(target / aspect).round().long()
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = ok.long().argmax(1, keepdim=True)  # first valid attempt (0 if none)
    cw, ch, found = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0], ok.any(1)
    # Fallback: the largest centred box with the aspect clamped into `ratio`.
    if w / h < ratio[0]:
        fw, fh = w, round(w / ratio[0])
    elif w / h > ratio[1]:
        fw, fh = round(h * ratio[1]), h
    else:
        fw, fh = w, h
    cw, ch = torch.where(found, cw, fw), torch.where(found, ch, fh)
    u = _uniform((b, 2), generator, device)
    top = torch.where(found, (u[:, 0] * (h - ch + 1)).long().clamp_max(h - ch), (h - ch) // 2)
    left = torch.where(found, (u[:, 1] * (w - cw + 1)).long().clamp_max(w - cw), (w - cw) // 2)
    return torch.stack([top, left, ch, cw], 1)


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Resample box (top, left, height, width) of each uint8 image to size x size, bilinear (pixel centres)."""
    b, _, h, w = images.shape
    top, left, ch, cw = boxes.float().unbind(1)
    zero = torch.zeros_like(top)
    theta = torch.stack([torch.stack([cw / w, zero, (2 * left + cw) / w - 1], 1),
                         torch.stack([zero, ch / h, (2 * top + ch) / h - 1], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, (b, 1, size, size), align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def random_resized_crop(images: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (B, C, H, W) -> uint8 (B, C, size, size): a random box per image, resampled (see module doc)."""
    b, _, h, w = images.shape
    return resized_crop(images, random_resized_crop_boxes(b, h, w, generator, images.device), size)


def _grey(x: torch.Tensor) -> torch.Tensor:
    # Python-scalar weights: no host-to-device copy of a constant tensor at every step.
    return x[:, 0:1] * _GREY[0] + x[:, 1:2] * _GREY[1] + x[:, 2:3] * _GREY[2]  # (B, 1, H, W)


def color_jitter(x: torch.Tensor, generator: torch.Generator | None = None,
                 strength: float = _IMAGENET.jitter) -> torch.Tensor:
    """Brightness, contrast, saturation with factors uniform in [1 - s, 1 + s]; x float in [0, 1]."""
    f = _uniform((x.shape[0], 3, 1, 1, 1), generator, x.device, max(0.0, 1 - strength), 1 + strength)
    x = (x * f[:, 0]).clamp(0, 1)
    x = (f[:, 1] * x + (1 - f[:, 1]) * _grey(x).mean((1, 2, 3), keepdim=True)).clamp(0, 1)
    return (f[:, 2] * x + (1 - f[:, 2]) * _grey(x)).clamp(0, 1)


def pca_lighting(x: torch.Tensor, generator: torch.Generator | None = None,
                 std: float = _IMAGENET.lighting_std) -> torch.Tensor:
    """AlexNet's PCA colour noise: x + V (alpha * eigval), alpha ~ N(0, std^2) per image; x float (B, 3, H, W)."""
    alpha = std * torch.randn((x.shape[0], 3), generator=generator, device=x.device)  # (B, 3)
    # rgb[:, c] = sum_k eigvec[c][k] eigval[k] alpha[:, k], with Python-scalar coefficients (no per-step copy).
    rgb = torch.stack([sum(alpha[:, k] * (PCA_EIGVEC[c][k] * PCA_EIGVAL[k]) for k in range(3)) for c in range(3)],
                      1)  # (B, 3)
    return x + rgb[:, :, None, None]


def pre_policy(recipe: str, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The recipe's steps before the policy (uint8 in and out): random-resized-crop where the record asks."""
    if get_recipe(recipe).resized_crop:
        return random_resized_crop(images, images.shape[-1], generator)
    return images


def post_policy(recipe: str, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                generator: torch.Generator | None = None, cutout: bool = True) -> torch.Tensor:
    """The recipe's steps after the policy, in the module's order: uint8 (B, 3, H, W) -> float32 standardised.

    `cutout=False` (data.cutout) skips the record's Cutout."""
    r = get_recipe(recipe)
    if r.crop_pad:
        images = random_crop(images, r.crop_pad, generator)
    if r.flip:
        images = random_flip(images, generator)
    x = images.float() / 255  # (B, 3, H, W) in [0, 1]
    if r.jitter:
        x = color_jitter(x, generator, r.jitter)
    if r.lighting_std:
        x = pca_lighting(x, generator, r.lighting_std)
    x = standardise(x, mean, std)
    if cutout and r.cutout_size:
        x = cutout_fixed(x, r.cutout_size, generator)
    return x
