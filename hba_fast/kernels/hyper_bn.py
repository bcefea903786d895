"""Hyper batch norm: batch statistics as usual, then a per-sample affine gamma (B, C), beta (B, C).

Math (per channel c, over the N = B*H*W values of the channel; xhat and y are (B, C, H, W)):

    mean_c = 1/N sum x,   var_c = 1/N sum (x - mean_c)^2,   rstd_c = 1/sqrt(var_c + eps)
    xhat = (x - mean_c) * rstd_c,   y[b, c] = gamma[b, c] * xhat[b, c] + beta[b, c]
    training: running <- (1 - momentum) * running + momentum * batch (var unbiased: var * N / (N - 1)),
              in place, exactly as torch.nn.functional.batch_norm; eval: mean, var = running statistics.

Backward (dy (B, C, H, W)); per-sample sums over the H*W pixels give the affine gradients directly:

    dbeta[b, c] = sum_hw dy,   dgamma[b, c] = sum_hw dy * xhat
    eval:     dx = rstd_c * gamma[b, c] * dy
    training: dx = rstd_c * (gamma[b, c] * dy - m1_c - xhat * m2_c),
              m1_c = 1/N sum_b gamma[b, c] dbeta[b, c],   m2_c = 1/N sum_b gamma[b, c] dgamma[b, c]

Kernels (x is viewed as (B, C, S = H*W) with strides (sb, sc, ss): NCHW has ss = 1, channels_last sc = 1;
Triton specialises the stride equal to 1, so one kernel coalesces along whichever axis is contiguous):
    forward  _bn_stats_partial_kernel  reads x once: (count, mean, M2) of each split of each channel
             _bn_stats_finalize_kernel (C,) work: Chan-combines the splits, mean/rstd, running update
             _hbn_fwd_kernel           reads x once more, writes y          -> x read twice in all
    backward _hbn_bwd_reduce_kernel    reads dy and x: per-(split, b, c) sums of dy and dy * xhat
             _hbn_bwd_channel_kernel   (B, C) work: dgamma, dbeta and m1, m2
             _hbn_bwd_dx_kernel        reads dy and x, writes dx             -> as torch's native backward

Variance: each program walks its tiles and merges the tile's exact two-pass (mean, M2), computed in
registers, into a running (count, mean, M2) with Chan's parallel formula, so no E[x^2] - E[x]^2
cancellation and no second read of x; values are shifted by the channel's first value so the merged
means stay O(std) and lose no precision when |mean| >> std. Large channels (256*56*56 = 802,816 values) are split over
several programs; the splits' partial (count, mean, M2) go to a small fp32 workspace and a second
(tiny) kernel combines them. We chose that over atomics because (count, mean, M2) triples cannot be
merged by atomic adds (sum / sum-of-squares atomics would bring the cancellation back) and because it
is deterministic: the same input gives bitwise the same statistics and gradients on every run. The number
of splits aims at 4 programs per multiprocessor (`triton_support.multiprocessors`: the device's own, or
`target_multiprocessors(n)`); tiles and splits are chosen in the "block-size heuristics" section only.

All statistics and accumulations are fp32 for fp32/fp16/bf16 inputs; y and dx come out in x's dtype
and memory format, dgamma/dbeta in gamma's/beta's dtype. No host synchronisation anywhere, so the
launches can be captured in a CUDA graph. The torch path (impl="torch", and the CPU) is
F.batch_norm without affine followed by one fused addcmul for the per-sample affine.

File anatomy: hyper_batch_norm_ref (pure torch), the @jit kernels, the block-size heuristics, the host
launchers (_stats_triton, _apply_triton, _backward_triton), the custom ops `hba_fast::hyper_batch_norm_{stats,
apply,bwd}` with the normalisation's autograd formula (so torch.compile and CUDA graph capture work), and the
public hyper_batch_norm with impl="auto" | "triton" | "torch" (decided by `triton_support.use_triton`; "auto"
also sends batches over the 65535 grid limit to torch).

References: Ioffe & Szegedy 2015 (batch norm); Chan, Golub & LeVeque 1979 (pairwise variance);
Triton tutorial 05 (layer norm) for the reduce-then-elementwise backward structure.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .triton_support import KERNEL_DTYPES, check_impl, jit, multiprocessors, tl, triton, use_triton

_MAX_BATCH = 65535  # the kernels put the batch on a grid axis, whose size CUDA caps at 65535


def hyper_batch_norm_ref(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    """Pure-torch reference: F.batch_norm without affine, then the per-sample affine."""
    xhat = F.batch_norm(x, running_mean, running_var, None, None, training, momentum, eps)
    return xhat * gamma[:, :, None, None].to(xhat.dtype) + beta[:, :, None, None].to(xhat.dtype)


# ----------------------------------------------------------------------------------------------- kernels
@jit
def _chan_combine(mean_a, m2_a, n_a, mean_b, m2_b, n_b):
    """Chan et al.: (mean, M2, count) of the union of two disjoint sets; empty sets (count 0) are neutral."""
    n = n_a + n_b
    w = n_b / tl.maximum(n, 1.0)  # counts are whole numbers: 0 only when both sets are empty
    delta = mean_b - mean_a
    return mean_a + delta * w, m2_a + m2_b + delta * delta * n_a * w, n


@jit
def _bn_stats_partial_kernel(
    x_ptr,  # (B, C, S) strides (stride_xb, stride_xc, stride_xs); fp32/fp16/bf16
    part_ptr,  # (3, SPLITS, C) fp32 contiguous: count, mean - x[0, c, 0], M2 of each split's values
    C, S, n_s_tiles, n_tiles, tiles_per_split, n_splits,
    stride_xb, stride_xc, stride_xs,
    BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    pid_c = tl.program_id(0)
    pid_split = tl.program_id(1)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    n = tl.zeros([BLOCK_C], dtype=tl.float32)
    mean = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    # shift by the channel's first value: the merged means stay O(std), so rounding them costs ulp(std),
    # not ulp(|mean|) (matters when |mean| >> std, e.g. 100 +- 0.1, and over hundreds of merges)
    shift = tl.load(x_ptr + offs_c * stride_xc, mask=mask_c, other=0.0).to(tl.float32)
    t_start = pid_split * tiles_per_split
    t_end = tl.minimum(t_start + tiles_per_split, n_tiles)
    for t in range(t_start, t_end):  # tile t = (sample b, pixel tile) in sample-major order
        b = t // n_s_tiles
        offs_s = (t % n_s_tiles) * BLOCK_S + tl.arange(0, BLOCK_S)
        mask_s = offs_s < S
        ptrs = x_ptr + b.to(tl.int64) * stride_xb + offs_c[:, None] * stride_xc + offs_s[None, :] * stride_xs
        xt = tl.load(ptrs, mask=mask_c[:, None] & mask_s[None, :], other=0.0).to(tl.float32)
        xt = tl.where(mask_s[None, :], xt - shift[:, None], 0.0)
        nt = tl.sum(mask_s.to(tl.float32), axis=0)  # values of this tile per channel (>= 1)
        t_mean = tl.sum(xt, axis=1) / nt
        d = tl.where(mask_s[None, :], xt - t_mean[:, None], 0.0)
        t_m2 = tl.sum(d * d, axis=1)
        mean, m2, n = _chan_combine(mean, m2, n, t_mean, t_m2, nt)
    base = part_ptr + pid_split * C + offs_c
    tl.store(base, n, mask=mask_c)
    tl.store(base + n_splits * C, mean, mask=mask_c)
    tl.store(base + 2 * n_splits * C, m2, mask=mask_c)


@jit
def _bn_stats_finalize_kernel(
    part_ptr,  # (3, SPLITS, C) fp32 from _bn_stats_partial_kernel (unused when USE_RUNNING)
    x_ptr,  # (B, C, S) stride_xc along C: x[0, c, 0] is the shift of the partial means
    mean_ptr,  # (C,) fp32 out: mean used for normalisation
    rstd_ptr,  # (C,) fp32 out: 1 / sqrt(var + eps)
    rmean_ptr,  # (C,) any float dtype: running mean (read when USE_RUNNING, updated when UPDATE_RUNNING)
    rvar_ptr,  # (C,) any float dtype: running variance (unbiased)
    C, n_splits, momentum, eps, stride_xc,
    USE_RUNNING: tl.constexpr, UPDATE_RUNNING: tl.constexpr, BLOCK_SPLIT: tl.constexpr, BLOCK_C: tl.constexpr,
):
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    if USE_RUNNING:  # eval: normalise with the running statistics
        mean = tl.load(rmean_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        var = tl.load(rvar_ptr + offs_c, mask=mask_c, other=1.0).to(tl.float32)
    else:
        n = tl.zeros([BLOCK_C], dtype=tl.float32)
        mean = tl.zeros([BLOCK_C], dtype=tl.float32)
        m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
        # a tree combine over BLOCK_SPLIT splits at a time: hundreds of splits cost a few dependent steps
        for i0 in range(0, n_splits, BLOCK_SPLIT):
            offs_i = i0 + tl.arange(0, BLOCK_SPLIT)
            mask = (offs_i < n_splits)[:, None] & mask_c[None, :]
            p = part_ptr + offs_i[:, None] * C + offs_c[None, :]
            n_i = tl.load(p, mask=mask, other=0.0)  # (BLOCK_SPLIT, BLOCK_C); count 0 = no split
            mean_i = tl.load(p + n_splits * C, mask=mask, other=0.0)
            m2_i = tl.load(p + 2 * n_splits * C, mask=mask, other=0.0)
            mean_b, m2_b, n_b = tl.reduce((mean_i, m2_i, n_i), 0, _chan_combine)
            mean, m2, n = _chan_combine(mean, m2, n, mean_b, m2_b, n_b)
        n = tl.maximum(n, 1.0)  # masked channels only; every real channel has N > 1 values
        mean += tl.load(x_ptr + offs_c * stride_xc, mask=mask_c, other=0.0).to(tl.float32)  # undo the shift
        var = m2 / n  # biased: what normalises the batch
        if UPDATE_RUNNING:
            rm = tl.load(rmean_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
            rv = tl.load(rvar_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
            rm = momentum * mean + (1.0 - momentum) * rm
            rv = momentum * (m2 / tl.maximum(n - 1.0, 1.0)) + (1.0 - momentum) * rv  # n > 1 (checked)
            tl.store(rmean_ptr + offs_c, rm.to(rmean_ptr.dtype.element_ty), mask=mask_c)
            tl.store(rvar_ptr + offs_c, rv.to(rvar_ptr.dtype.element_ty), mask=mask_c)
    tl.store(mean_ptr + offs_c, mean, mask=mask_c)
    tl.store(rstd_ptr + offs_c, 1.0 / tl.sqrt(var + eps), mask=mask_c)


@jit
def _hbn_fwd_kernel(
    x_ptr,  # (B, C, S) strides (stride_xb, stride_xc, stride_xs)
    y_ptr,  # (B, C, S) strides (stride_yb, stride_yc, stride_ys); x's dtype
    gamma_ptr,  # (B, C) strides (stride_gb, stride_gc)
    beta_ptr,  # (B, C) strides (stride_bb, stride_bc)
    mean_ptr,  # (C,) fp32
    rstd_ptr,  # (C,) fp32
    C, S,
    stride_xb, stride_xc, stride_xs, stride_yb, stride_yc, stride_ys,
    stride_gb, stride_gc, stride_bb, stride_bc,
    BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    pid_s = tl.program_id(0)
    b = tl.program_id(2).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    mask_c = offs_c < C
    mask = mask_c[:, None] & (offs_s < S)[None, :]
    g = tl.load(gamma_ptr + b * stride_gb + offs_c * stride_gc, mask=mask_c, other=0.0).to(tl.float32)
    be = tl.load(beta_ptr + b * stride_bb + offs_c * stride_bc, mask=mask_c, other=0.0).to(tl.float32)
    mu = tl.load(mean_ptr + offs_c, mask=mask_c, other=0.0)
    rs = tl.load(rstd_ptr + offs_c, mask=mask_c, other=0.0)
    scale = rs * g
    x = tl.load(x_ptr + b * stride_xb + offs_c[:, None] * stride_xc + offs_s[None, :] * stride_xs, mask=mask)
    # (x - mean) first: folding the mean into a shift (x * scale + shift) cancels catastrophically when
    # |mean| >> std, and the subtraction costs nothing in a bandwidth-bound kernel
    y = (x.to(tl.float32) - mu[:, None]) * scale[:, None] + be[:, None]
    tl.store(y_ptr + b * stride_yb + offs_c[:, None] * stride_yc + offs_s[None, :] * stride_ys,
             y.to(y_ptr.dtype.element_ty), mask=mask)


@jit
def _hbn_bwd_reduce_kernel(
    dy_ptr,  # (B, C, S) strides (stride_db, stride_dc, stride_ds)
    x_ptr,  # (B, C, S) strides (stride_xb, stride_xc, stride_xs)
    mean_ptr,  # (C,) fp32
    rstd_ptr,  # (C,) fp32
    part_ptr,  # (2, SPLITS, B, C) fp32 contiguous out: sum dy, sum dy * xhat over each split's pixels
    B, C, S, tiles_per_split, n_splits,
    stride_db, stride_dc, stride_ds, stride_xb, stride_xc, stride_xs,
    BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    pid_b = tl.program_id(1)
    pid_split = tl.program_id(2)
    b = pid_b.to(tl.int64)
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    mu = tl.load(mean_ptr + offs_c, mask=mask_c, other=0.0)
    rs = tl.load(rstd_ptr + offs_c, mask=mask_c, other=0.0)
    acc_dy = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float32)
    acc_dyx = tl.zeros([BLOCK_C, BLOCK_S], dtype=tl.float32)
    s_start = pid_split * tiles_per_split * BLOCK_S
    s_end = tl.minimum(s_start + tiles_per_split * BLOCK_S, S)
    for s0 in range(s_start, s_end, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        mask = mask_c[:, None] & (offs_s < S)[None, :]
        dy = tl.load(dy_ptr + b * stride_db + offs_c[:, None] * stride_dc + offs_s[None, :] * stride_ds,
                     mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + b * stride_xb + offs_c[:, None] * stride_xc + offs_s[None, :] * stride_xs,
                    mask=mask, other=0.0).to(tl.float32)
        acc_dy += dy
        acc_dyx += dy * ((x - mu[:, None]) * rs[:, None])  # masked dy is 0, so padding adds nothing
    out = part_ptr + (pid_split * B + pid_b) * C + offs_c
    tl.store(out, tl.sum(acc_dy, axis=1), mask=mask_c)
    tl.store(out + n_splits * B * C, tl.sum(acc_dyx, axis=1), mask=mask_c)


@jit
def _hbn_bwd_channel_kernel(
    part_ptr,  # (2, SPLITS, B, C) fp32 from _hbn_bwd_reduce_kernel
    gamma_ptr,  # (B, C) strides (stride_gb, stride_gc)
    dgamma_ptr,  # (B, C) contiguous out, gamma's dtype
    dbeta_ptr,  # (B, C) contiguous out, beta's dtype
    m_ptr,  # (2, C) fp32 out: m1 = 1/N sum_b gamma dbeta, m2 = 1/N sum_b gamma dgamma
    B, C, n_splits, inv_n,
    stride_gb, stride_gc,
    BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr,
):
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    m1 = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    for b0 in range(0, B, BLOCK_B):
        offs_b = b0 + tl.arange(0, BLOCK_B)
        mask = (offs_b < B)[:, None] & mask_c[None, :]
        bc = offs_b[:, None] * C + offs_c[None, :]
        db = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)
        dg = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)
        for i in range(n_splits):
            db += tl.load(part_ptr + i * B * C + bc, mask=mask, other=0.0)
            dg += tl.load(part_ptr + (n_splits + i) * B * C + bc, mask=mask, other=0.0)
        tl.store(dbeta_ptr + bc, db.to(dbeta_ptr.dtype.element_ty), mask=mask)
        tl.store(dgamma_ptr + bc, dg.to(dgamma_ptr.dtype.element_ty), mask=mask)
        g = tl.load(gamma_ptr + offs_b[:, None] * stride_gb + offs_c[None, :] * stride_gc,
                    mask=mask, other=0.0).to(tl.float32)
        m1 += tl.sum(g * db, axis=0)
        m2 += tl.sum(g * dg, axis=0)
    tl.store(m_ptr + offs_c, m1 * inv_n, mask=mask_c)
    tl.store(m_ptr + C + offs_c, m2 * inv_n, mask=mask_c)


@jit
def _hbn_bwd_dx_kernel(
    dy_ptr,  # (B, C, S) strides (stride_db, stride_dc, stride_ds)
    x_ptr,  # (B, C, S) strides (stride_xb, stride_xc, stride_xs)
    dx_ptr,  # (B, C, S) strides (stride_ob, stride_oc, stride_os); x's dtype
    gamma_ptr,  # (B, C) strides (stride_gb, stride_gc)
    mean_ptr,  # (C,) fp32
    rstd_ptr,  # (C,) fp32
    m_ptr,  # (2, C) fp32: m1, m2 (read only when TRAINING)
    C, S,
    stride_db, stride_dc, stride_ds, stride_xb, stride_xc, stride_xs, stride_ob, stride_oc, stride_os,
    stride_gb, stride_gc,
    TRAINING: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    b = tl.program_id(2).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_s = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
    mask_c = offs_c < C
    mask = mask_c[:, None] & (offs_s < S)[None, :]
    g = tl.load(gamma_ptr + b * stride_gb + offs_c * stride_gc, mask=mask_c, other=0.0).to(tl.float32)
    rs = tl.load(rstd_ptr + offs_c, mask=mask_c, other=0.0)
    dy = tl.load(dy_ptr + b * stride_db + offs_c[:, None] * stride_dc + offs_s[None, :] * stride_ds,
                 mask=mask, other=0.0).to(tl.float32)
    dx = dy * (rs * g)[:, None]
    if TRAINING:  # the batch statistics depend on x: subtract their share of the gradient
        mu = tl.load(mean_ptr + offs_c, mask=mask_c, other=0.0)
        m1 = tl.load(m_ptr + offs_c, mask=mask_c, other=0.0)
        m2 = tl.load(m_ptr + C + offs_c, mask=mask_c, other=0.0)
        x = tl.load(x_ptr + b * stride_xb + offs_c[:, None] * stride_xc + offs_s[None, :] * stride_xs,
                    mask=mask, other=0.0).to(tl.float32)
        xhat = (x - mu[:, None]) * rs[:, None]
        dx -= rs[:, None] * (m1[:, None] + xhat * m2[:, None])
    tl.store(dx_ptr + b * stride_ob + offs_c[:, None] * stride_oc + offs_s[None, :] * stride_os,
             dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------ block-size heuristics
def _num_programs_target(device: torch.device) -> int:
    """Programs that fill the device a few times over: 4 per multiprocessor (`triton_support.multiprocessors`,
    which `target_multiprocessors(n)` sets); off CUDA and under the interpreter 4 in all, to exercise splits."""
    return 4 * (multiprocessors(device) or 1)


def _tiles(C: int, S: int, channels_contiguous: bool) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_S, num_warps) for a (C, S) plane: the contiguous axis gets the long side of the tile."""
    elems = 4096
    if channels_contiguous:  # channels_last: a tile row covers up to 128 channels of one pixel
        block_c = min(triton.next_power_of_2(C), 128)
        block_s = min(triton.next_power_of_2(S), max(1, elems // block_c))
    else:  # NCHW: a tile row runs along the pixels of one channel; small planes stack several channels
        block_s = min(triton.next_power_of_2(S), 1024)
        block_c = min(triton.next_power_of_2(C), max(1, elems // block_s))
    return block_c, block_s, 8 if block_c * block_s >= 2048 else 4


def _small_blocks(B: int, C: int, n_splits: int) -> tuple[int, int, int, int]:
    """Blocks of the two tiny kernels: finalize (BLOCK_SPLIT, BLOCK_C), channel kernel (BLOCK_B, BLOCK_C)."""
    block_c = min(triton.next_power_of_2(C), 32)
    return min(triton.next_power_of_2(n_splits), 64), block_c, min(triton.next_power_of_2(B), 64), block_c


def _splits(tiles: int, programs_per_split: int, device: torch.device) -> tuple[int, int]:
    """(n_splits, tiles_per_split): cut a reduction over `tiles` tiles so the whole grid fills the device.

    Every split gets at least one tile (the stats combine divides by each split's count)."""
    want = max(1, min(tiles, -(-_num_programs_target(device) // programs_per_split)))
    tiles_per_split = -(-tiles // want)
    return -(-tiles // tiles_per_split), tiles_per_split


# ----------------------------------------------------------------------------------------------- launchers
def _bcs_strides(t: torch.Tensor) -> tuple[int, int, int] | None:
    """Strides (sb, sc, ss) of t (B, C, H, W) viewed as (B, C, S = H*W), or None where H, W do not merge."""
    _, _, H, W = t.shape
    sb, sc, sh, sw = t.stride()
    if W == 1:
        return sb, sc, sh
    if H == 1 or sh == W * sw:
        return sb, sc, sw
    return None


def _as_bcs(t: torch.Tensor, channels_last: bool) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """t and its (B, C, S) strides; copies t into a standard layout only when H and W cannot be merged."""
    strides = _bcs_strides(t)
    if strides is None:
        t = t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        strides = _bcs_strides(t)
    assert strides is not None
    return t, strides


def _channels_contiguous(C: int, S: int, strides: tuple[int, int, int]) -> bool:
    return S == 1 or (strides[1] == 1 and strides[2] != 1 and C > 1)


def _stats_triton(x, running_mean, running_var, use_batch_stats: bool, momentum: float,
                  eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mean (C,) fp32 and rstd (C,) fp32 used to normalise x: the batch's (updating the running statistics in place
    when given) or, with use_batch_stats False, the running statistics'."""
    B, C, H, W = x.shape
    S = H * W
    xs = _bcs_strides(x)
    assert xs is not None, "hyper_batch_norm passes x with mergeable H, W"
    mean = torch.empty(C, device=x.device, dtype=torch.float32)  # (C,)
    rstd = torch.empty(C, device=x.device, dtype=torch.float32)  # (C,)
    block_c, block_s, warps = _tiles(C, S, _channels_contiguous(C, S, xs))
    c_blocks, n_s_tiles = triton.cdiv(C, block_c), triton.cdiv(S, block_s)
    part, n_splits = mean, 1  # placeholders for eval, where the kernel reads no partials
    if use_batch_stats:
        n_tiles = B * n_s_tiles
        n_splits, tiles_per_split = _splits(n_tiles, c_blocks, x.device)
        part = torch.empty((3, n_splits, C), device=x.device, dtype=torch.float32)  # count, mean, M2
        _bn_stats_partial_kernel[(c_blocks, n_splits)](
            x, part, C, S, n_s_tiles, n_tiles, tiles_per_split, n_splits, *xs,
            BLOCK_C=block_c, BLOCK_S=block_s, num_warps=warps)
    has_running = running_mean is not None
    fin_block_split, fin_block_c, _, _ = _small_blocks(B, C, n_splits)
    _bn_stats_finalize_kernel[(triton.cdiv(C, fin_block_c),)](
        part, x, mean, rstd, running_mean if has_running else mean, running_var if has_running else rstd,
        C, n_splits, float(momentum) if has_running else 0.0, float(eps), xs[1],
        USE_RUNNING=not use_batch_stats, UPDATE_RUNNING=use_batch_stats and has_running,
        BLOCK_SPLIT=fin_block_split, BLOCK_C=fin_block_c)
    return mean, rstd


def _apply_triton(x, gamma, beta, mean, rstd) -> torch.Tensor:
    """y (B, C, H, W) in x's dtype and layout: (x - mean) * rstd * gamma + beta, gamma and beta (B, C)."""
    B, C, H, W = x.shape
    S = H * W
    xs = _bcs_strides(x)
    assert xs is not None, "hyper_batch_norm passes x with mergeable H, W"
    y = torch.empty_like(x)  # (B, C, H, W), same memory format as x
    ys = _bcs_strides(y)
    assert ys is not None
    block_c, block_s, warps = _tiles(C, S, _channels_contiguous(C, S, xs))
    c_blocks, n_s_tiles = triton.cdiv(C, block_c), triton.cdiv(S, block_s)
    _hbn_fwd_kernel[(n_s_tiles, c_blocks, B)](
        x, y, gamma, beta, mean, rstd, C, S, *xs, *ys, *gamma.stride(), *beta.stride(),
        BLOCK_C=block_c, BLOCK_S=block_s, num_warps=warps)
    return y


def _forward_triton(x, gamma, beta, running_mean, running_var, use_batch_stats: bool, momentum: float,
                    eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y (B, C, H, W) in x's dtype and layout, mean (C,) fp32, rstd (C,) fp32; updates the running stats."""
    mean, rstd = _stats_triton(x, running_mean, running_var, use_batch_stats, momentum, eps)
    return _apply_triton(x, gamma, beta, mean, rstd), mean, rstd


def _backward_triton(dy, x, gamma, mean, rstd, use_batch_stats: bool, need_dx: bool, need_affine: bool,
                     beta_dtype: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """dx (B, C, H, W) like x, dgamma (B, C) in gamma's dtype, dbeta (B, C) in beta_dtype (None if not needed)."""
    B, C, H, W = x.shape
    S = H * W
    xs = _bcs_strides(x)
    assert xs is not None
    channels_contiguous = _channels_contiguous(C, S, xs)
    dy, ds = _as_bcs(dy, channels_last=channels_contiguous)
    block_c, block_s, warps = _tiles(C, S, channels_contiguous)
    c_blocks, n_s_tiles = triton.cdiv(C, block_c), triton.cdiv(S, block_s)
    dx = dgamma = dbeta = None
    m = mean  # placeholder: the dx kernel reads m1, m2 only in training
    if need_affine or (need_dx and use_batch_stats):
        n_splits, tiles_per_split = _splits(n_s_tiles, c_blocks * B, x.device)
        part = torch.empty((2, n_splits, B, C), device=x.device, dtype=torch.float32)  # sum dy, sum dy*xhat
        _hbn_bwd_reduce_kernel[(c_blocks, B, n_splits)](
            dy, x, mean, rstd, part, B, C, S, tiles_per_split, n_splits, *ds, *xs,
            BLOCK_C=block_c, BLOCK_S=block_s, num_warps=warps)
        dgamma = torch.empty((B, C), device=x.device, dtype=gamma.dtype)  # (B, C)
        dbeta = torch.empty((B, C), device=x.device, dtype=beta_dtype)  # (B, C)
        m = torch.empty((2, C), device=x.device, dtype=torch.float32)  # m1, m2
        _, _, ch_block_b, ch_block_c = _small_blocks(B, C, n_splits)
        _hbn_bwd_channel_kernel[(triton.cdiv(C, ch_block_c),)](
            part, gamma, dgamma, dbeta, m, B, C, n_splits, 1.0 / (B * S), *gamma.stride(),
            BLOCK_B=ch_block_b, BLOCK_C=ch_block_c)
    if need_dx:
        dx = torch.empty_like(x)  # (B, C, H, W), x's memory format
        os_ = _bcs_strides(dx)
        assert os_ is not None
        _hbn_bwd_dx_kernel[(n_s_tiles, c_blocks, B)](
            dy, x, dx, gamma, mean, rstd, m, C, S, *ds, *xs, *os_, *gamma.stride(),
            TRAINING=use_batch_stats, BLOCK_C=block_c, BLOCK_S=block_s, num_warps=warps)
    return dx, dgamma, dbeta


# ------------------------------------------------------------------------------------------ custom ops
# The launchers as torch.library custom ops: torch.compile sees one opaque node each (it never traces the launches),
# AOTAutograd differentiates through the formula registered below, and a CUDA graph capture records the launches.
# The statistics (which update the running statistics in place, declared as mutated arguments) and the
# normalisation are two ops because torch.library gives autograd formulas to functional ops only: the statistics
# reach the normalisation detached, and its formula carries their share of dx (the module docstring's m1, m2).


@torch.library.custom_op("hba_fast::hyper_batch_norm_stats", mutates_args=("running_mean", "running_var"))
def _stats_op(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None, use_batch_stats: bool,
              momentum: float, eps: float) -> tuple[Tensor, Tensor]:
    """mean (C,) and rstd (C,) fp32; updates the running statistics when use_batch_stats."""
    return _stats_triton(x, running_mean, running_var, use_batch_stats, momentum, eps)


@_stats_op.register_fake
def _stats_fake(x, running_mean, running_var, use_batch_stats, momentum, eps):
    C = x.shape[1]
    return x.new_empty((C,), dtype=torch.float32), x.new_empty((C,), dtype=torch.float32)


@torch.library.custom_op("hba_fast::hyper_batch_norm_apply", mutates_args=())
def _apply_op(x: Tensor, gamma: Tensor, beta: Tensor, mean: Tensor, rstd: Tensor, use_batch_stats: bool) -> Tensor:
    """y like x; `use_batch_stats` says whether mean and rstd are x's own (the backward then carries their share)."""
    return _apply_triton(x, gamma, beta, mean, rstd)


@_apply_op.register_fake
def _apply_fake(x, gamma, beta, mean, rstd, use_batch_stats):
    return torch.empty_like(x)


@torch.library.custom_op("hba_fast::hyper_batch_norm_bwd", mutates_args=())
def _bwd_op(dy: Tensor, x: Tensor, gamma: Tensor, mean: Tensor, rstd: Tensor, use_batch_stats: bool, need_dx: bool,
            need_affine: bool, beta_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """dx like x, dgamma (B, C), dbeta (B, C); an empty (0,) tensor for each one not asked for."""
    dx, dgamma, dbeta = _backward_triton(dy, x, gamma, mean, rstd, use_batch_stats, need_dx, need_affine, beta_dtype)
    if not need_affine:  # computed anyway when dx needs them (training); the op's outputs follow its arguments
        dgamma = dbeta = None
    return tuple(t if t is not None else x.new_empty(0) for t in (dx, dgamma, dbeta))


@_bwd_op.register_fake
def _bwd_fake(dy, x, gamma, mean, rstd, use_batch_stats, need_dx, need_affine, beta_dtype):
    B, C = x.shape[:2]
    dx = torch.empty_like(x) if need_dx else x.new_empty(0)
    if not need_affine:
        return dx, x.new_empty(0), x.new_empty(0)
    return dx, x.new_empty((B, C), dtype=gamma.dtype), x.new_empty((B, C), dtype=beta_dtype)


def _apply_setup(ctx, inputs, output):
    x, gamma, beta, mean, rstd, use_batch_stats = inputs
    ctx.save_for_backward(x, gamma, mean, rstd)
    ctx.use_batch_stats, ctx.beta_dtype = use_batch_stats, beta.dtype


def _apply_backward(ctx, dy):
    x, gamma, mean, rstd = ctx.saved_tensors
    need_dx, need_gamma, need_beta = ctx.needs_input_grad[:3]
    dx, dgamma, dbeta = _bwd_op(dy, x, gamma, mean, rstd, ctx.use_batch_stats, need_dx, need_gamma or need_beta,
                                ctx.beta_dtype)
    return dx if need_dx else None, dgamma if need_gamma else None, dbeta if need_beta else None, None, None, None


_apply_op.register_autograd(_apply_backward, setup_context=_apply_setup)


# ------------------------------------------------------------------------------------------ public surface
def _desc(t) -> str:
    return f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__


def _check_inputs(x, gamma, beta, running_mean, running_var, training, momentum, eps) -> None:
    """Typed errors naming the bad value and the fix (no host synchronisation: shapes and metadata only)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"hyper_batch_norm: x must be a floating (B, C, H, W) tensor, got {_desc(x)}")
    B, C, H, W = x.shape
    for name, t in (("gamma", gamma), ("beta", beta)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (B, C) or not t.is_floating_point():
            raise ValueError(f"hyper_batch_norm: {name} must be a floating (B, C) = ({B}, {C}) tensor (one affine "
                             f"per sample; expand a shared (C,) one with .expand({B}, -1)), got {_desc(t)}")
        if t.device != x.device:
            raise ValueError(f"hyper_batch_norm: {name} is on {t.device} but x is on {x.device}; "
                             f"move both to one device")
    if (running_mean is None) != (running_var is None):
        raise ValueError("hyper_batch_norm: pass both running_mean and running_var, or neither")
    if running_mean is not None:
        for name, t in (("running_mean", running_mean), ("running_var", running_var)):
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != (C,) or not t.is_floating_point():
                raise ValueError(f"hyper_batch_norm: {name} must be a floating ({C},) tensor, got {_desc(t)}")
            if t.device != x.device:
                raise ValueError(f"hyper_batch_norm: {name} is on {t.device} but x is on {x.device}")
            if not t.is_contiguous():
                raise ValueError(f"hyper_batch_norm: {name} must be contiguous (it is updated in place); "
                                 "keep it as a registered buffer, not a strided view")
    elif not training:
        raise ValueError("hyper_batch_norm: eval mode (training=False) needs running_mean and running_var; "
                         "pass training=True to normalise with batch statistics")
    if not isinstance(training, bool):
        raise TypeError(f"hyper_batch_norm: training must be a bool, got {type(training).__name__}")
    if momentum is None:
        raise ValueError("hyper_batch_norm: momentum=None (cumulative average) is not supported here; pass the "
                         "factor 1 / num_batches_tracked as momentum, as nn.BatchNorm2d does for F.batch_norm")
    if not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"hyper_batch_norm: momentum must be a float in [0, 1], got {momentum!r}")
    if not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"hyper_batch_norm: eps must be a positive float, got {eps!r}")
    if training and B * H * W <= 1:
        raise ValueError(f"hyper_batch_norm: expected more than 1 value per channel when training, got input size "
                         f"{tuple(x.shape)}; use eval mode (training=False) or a larger batch")


def _check_triton(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> None:
    """What impl="triton" needs beyond `use_triton`'s device check: the kernel's dtypes and batch limit."""
    for name, t in (("x", x), ("gamma", gamma), ("beta", beta)):
        if t.dtype not in KERNEL_DTYPES:
            raise TypeError(f"hyper_batch_norm(impl='triton'): {name} has dtype {t.dtype}; the kernel takes "
                            "float32, float16 or bfloat16 (use impl='torch' for others)")
    if x.shape[0] > _MAX_BATCH:
        raise ValueError(f"hyper_batch_norm(impl='triton'): batch {x.shape[0]} exceeds the grid limit {_MAX_BATCH}; "
                         "split the batch or use impl='torch'")


def _hyper_batch_norm_torch(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    """The torch path: F.batch_norm without affine, then the per-sample affine in one fused addcmul."""
    xhat = F.batch_norm(x, running_mean, running_var, None, None, training, momentum, eps)
    return torch.addcmul(beta[:, :, None, None].to(x.dtype), xhat, gamma[:, :, None, None].to(x.dtype))


def hyper_batch_norm(
    x: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    impl: str = "auto",
) -> torch.Tensor:
    """Batch norm of x (B, C, H, W) with the per-sample affine gamma, beta (B, C); see the module docstring.

    running_mean / running_var (C,) are updated in place when training (None: batch statistics always).
    impl: "auto" (Triton on CUDA float32/float16/bfloat16 tensors, torch elsewhere) | "triton" (CUDA, or CPU
    under TRITON_INTERPRET=1) | "torch"; see `triton_support.use_triton`. Returns y like x.
    """
    check_impl(impl, "hyper_batch_norm")
    _check_inputs(x, gamma, beta, running_mean, running_var, training, momentum, eps)
    triton_path = use_triton(impl, x, "hyper_batch_norm")
    if impl == "triton":
        _check_triton(x, gamma, beta)
    elif x.shape[0] > _MAX_BATCH:  # "auto": the grid limit _check_triton names sends the batch to torch
        triton_path = False
    if not triton_path or x.numel() == 0:
        return _hyper_batch_norm_torch(x, gamma, beta, running_mean, running_var, training, momentum, eps)
    use_batch_stats = training or running_mean is None
    x, _ = _as_bcs(x, channels_last=x.stride(1) < x.stride(3))  # copies only views whose H, W do not merge
    mean, rstd = _stats_op(x.detach(), running_mean, running_var, use_batch_stats, float(momentum), float(eps))
    return _apply_op(x, gamma, beta, mean, rstd, use_batch_stats)
