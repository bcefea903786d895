"""PBA's policy, batched per sample: draw each image's ops from (probs, mags) and apply them.

Policy (PBA Algorithm 1), per image: K ~ {0: 0.2, 1: 0.3, 2: 0.5}; walk the 30 slots in a fresh random order;
at each slot, while fewer than K ops were applied, apply the slot's op with its probability (signed ops get a
random sign). Since the accept draws at different slots are independent, this equals: permute the slots, draw
one Bernoulli(p) per slot, keep the first K accepted. Vectorised over the batch with static shapes and no
host syncs: the permutation is argsort of uniform keys, the first K accepted come from a cumulative sum.

Shapes: probs, mags (30,) shared or (B, 30) per sample; a draw holds slots / ops / mags (B, 2) for the two
positions (-1 / -1 / 0 where nothing is applied) and k (B,).

Applying a draw, two forms with identical results (bit for bit, both equal to each op's Pillow-exact function):
- indexed: each drawn op runs on the images that drew it (`images[idx]`): the least arithmetic, but data-dependent
  shapes and host syncs (`unique().tolist()`, `nonzero`: a few per op and position), so no CUDA graph;
- static: `static.apply_positions`, a fixed set of batched passes per position (one affine gather, one table
  gather, one blend, one mask; on CUDA three fused Triton kernels) whatever was drawn: no host syncs, capturable
  in a CUDA graph.
`data.policy_form` picks one: `auto` = static on CUDA, indexed on the CPU (`static_form`).

References: Ho et al., "Population Based Augmentation" (2019), Algorithm 1; SPEC sections 3 and 6.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .ops import OPS, check_images, cutout, cutout_centres, cutout_size
from .pba_draw import K_PROBS, MAX_OPS
from .space import NUM_OPS, NUM_SLOTS
from .static import apply_positions

_CUTOUT = next(k for k, op in enumerate(OPS) if op.kind == "cutout")  # its own centres
# Per-op flags as bit masks, so a (B,) tensor of op indices is looked up with shifts (no host-to-device copy).
_SIGNED_BITS = sum(1 << k for k, op in enumerate(OPS) if op.signed)
_HAS_MAG_BITS = sum(1 << k for k, op in enumerate(OPS) if op.has_magnitude)


def _flag(bits: int, op: torch.Tensor) -> torch.Tensor:
    """bool (B,): bit op[i] of `bits` (op indices >= 0)."""
    return (torch.bitwise_right_shift(bits, op) & 1).bool()


@dataclass(frozen=True)
class PolicyDraw:
    """The ops drawn for each image: position 0 is applied first; -1 / 0 where fewer than two are applied.
    PBA's draw has P = 2 positions; the fixed policies of hba_fast.augment.baselines may have P >= 1 (slots -1
    there)."""

    slots: torch.Tensor  # long (B, P): slot index 0..29 or -1
    ops: torch.Tensor  # long (B, P): op index 0..14 or -1
    mags: torch.Tensor  # float32 (B, P): signed magnitudes (0 where no op or no magnitude)
    k: torch.Tensor  # long (B,): the drawn K in {0, 1, 2} (applied ops <= K)


def _per_sample(t: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise TypeError(f"{what} must be a floating-point torch.Tensor, got {getattr(t, 'dtype', type(t))}")
    if t.shape == (NUM_SLOTS,):
        return t.float().expand(batch, NUM_SLOTS)
    if t.shape != (batch, NUM_SLOTS):
        raise ValueError(f"{what} must have shape ({NUM_SLOTS},) or ({batch}, {NUM_SLOTS}), got {tuple(t.shape)}")
    return t.float()


def sample_policy(
    probs: torch.Tensor,
    mags: torch.Tensor,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> PolicyDraw:
    """Draw PBA's per-image policy. probs, mags (30,) shared or (B, 30); batch_size is needed when both are shared.

    Random numbers come from `generator` (on probs' device) in a fixed number of draws, so the result is a
    function of the generator state only, with no host sync.
    """
    if batch_size is None:
        shaped = [t for t in (probs, mags) if isinstance(t, torch.Tensor) and t.dim() == 2]
        if not shaped:
            raise ValueError("probs and mags are both shared (30,): pass batch_size=B")
        batch_size = shaped[0].shape[0]
    p = _per_sample(probs, batch_size, "probs")  # (B, 30)
    m = _per_sample(mags, batch_size, "mags").to(p.device)
    device = p.device

    u_k = torch.rand(batch_size, generator=generator, device=device)  # (B,)
    k = (u_k >= K_PROBS[0]).long() + (u_k >= K_PROBS[0] + K_PROBS[1]).long()  # (B,) in {0, 1, 2}
    order = torch.rand(batch_size, NUM_SLOTS, generator=generator, device=device).argsort(1)  # (B, 30) permutation
    accept = torch.rand(batch_size, NUM_SLOTS, generator=generator, device=device) < p.gather(1, order)  # (B, 30)
    u_sign = torch.rand(batch_size, MAX_OPS, generator=generator, device=device)  # (B, 2)

    rank = accept.long().cumsum(1)  # (B, 30): accepted slots so far, in walk order
    r = torch.arange(1, MAX_OPS + 1, device=device)  # (2,): position r-1 holds the r-th accepted slot
    hit = accept[:, None, :] & (rank[:, None, :] == r[None, :, None])  # (B, 2, 30)
    applied = hit.any(2) & (k[:, None] >= r)  # (B, 2)
    slot = order.gather(1, hit.byte().argmax(2))  # (B, 2): the first (only) hit in walk order
    slot = torch.where(applied, slot, -1)
    op = torch.where(applied, slot % NUM_OPS, -1)
    known = op.clamp(min=0)
    mag = m.gather(1, slot.clamp(min=0))  # (B, 2)
    mag = torch.where(applied & _flag(_HAS_MAG_BITS, known), mag, 0.0)
    flip = _flag(_SIGNED_BITS, known) & (u_sign < 0.5)
    return PolicyDraw(slot, op, torch.where(flip, -mag, mag), k)


def apply_draw(
    images: torch.Tensor,
    draw: PolicyDraw,
    static: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply the drawn ops to uint8 images (B, 3, H, W), position 0 then position 1 (then any further ones: a draw
    may hold P >= 1 positions, e.g. RandAugment's N ops; PBA's have two).

    Cutout's centres are drawn for the whole batch up front (P (B, 2) draws from `generator`), so both forms
    consume the same random numbers and give identical results. static=False runs each op on the images that
    drew it (data-dependent shapes, host syncs); static=True runs `static.apply_positions`: fixed shapes and
    work whatever was drawn, no host syncs, capturable in a CUDA graph (Triton kernels on CUDA).
    """
    check_images(images)
    b, _, h, w = images.shape
    positions = draw.ops.shape[1] if draw.ops.dim() == 2 else 0
    if draw.ops.shape != (b, positions) or draw.mags.shape != (b, positions) or positions < 1:
        raise ValueError(f"draw must hold ops and mags of shape ({b}, P >= 1) (P = {MAX_OPS} for PBA's policy), "
                         f"got {tuple(draw.ops.shape)} and {tuple(draw.mags.shape)}")
    centres = [cutout_centres(b, h, w, generator, images.device) for _ in range(positions)]  # P x (B, 2)
    ops, mags = draw.ops.to(images.device), draw.mags.to(images.device).float()  # (B, P)
    if static:
        return apply_positions(images.contiguous(), ops, mags, centres)
    out = images
    for pos in range(positions):
        out = _apply_position_indexed(out, ops[:, pos], mags[:, pos], centres[pos], generator)
    return out


def _run_op(images: torch.Tensor, k: int, mag: torch.Tensor, centres: torch.Tensor, generator) -> torch.Tensor:
    if k == _CUTOUT:
        return cutout(images, cutout_size(mag, images.shape[2], images.shape[3]), centres=centres)
    return OPS[k].fn(images, mag, generator)


def _apply_position_indexed(images, op_idx, mag, centres, generator) -> torch.Tensor:
    out = images.clone()
    for k in torch.unique(op_idx[op_idx >= 0]).tolist():
        idx = (op_idx == k).nonzero().squeeze(1)  # (n,)
        out[idx] = _run_op(images[idx], k, mag[idx], centres[idx], generator)
    return out


def apply_policy(
    images: torch.Tensor,
    probs: torch.Tensor,
    mags: torch.Tensor,
    generator: torch.Generator | None = None,
    static: bool = False,
) -> torch.Tensor:
    """PBA's per-sample policy (SPEC 6): uint8 (B, 3, H, W) in and out; probs, mags (30,) or (B, 30)."""
    check_images(images)
    if isinstance(probs, torch.Tensor) and isinstance(mags, torch.Tensor):
        probs, mags = probs.to(images.device), mags.to(images.device)  # no-ops when already there
    draw = sample_policy(probs, mags, generator, batch_size=images.shape[0])
    return apply_draw(images, draw, static=static, generator=generator)


POLICY_FORMS = ("auto", "static", "indexed")  # data.policy_form


def static_form(form: str, device: torch.device | str) -> bool:
    """Whether data.policy_form `form` means the static form on `device`.

    auto: static on CUDA, where host syncs stall the GPU's queue and a CUDA graph needs fixed shapes (and the
    static form runs as three fused Triton kernels per position); indexed on the CPU, where syncs cost nothing and
    the static form's extra passes do: on a shared 2-core CPU (torch 2.13, 1 thread, minimum of interleaved
    repetitions of sample + apply) the static form took 3-4x the indexed form's time at 32x32 (batch 64 and 128)
    and 8-12x at 224x224 (batch 32). `bench/bench_pipeline.py --cpu` measures both.
    """
    if form not in POLICY_FORMS:
        raise ValueError(f"policy form must be one of {', '.join(POLICY_FORMS)}, got {form!r}")
    if form == "auto":
        return torch.device(device).type == "cuda"
    return form == "static"
