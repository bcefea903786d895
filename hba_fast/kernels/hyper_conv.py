"""Hyper-conv: y = conv(x, w0) + scale[:, :, None, None] * conv(x, wu) (+ bias0 + scale * biasu).

Shapes: x (B, Cin, H, W) in NCHW or channels_last; w0, wu (Cout, Cin, kh, kw); scale (B, Cout);
bias0, biasu (Cout,); y (B, Cout, Ho, Wo) in the memory format of x. Groups are not supported.

Forward: one implicit GEMM, M = B*Ho*Wo rows, N = Cout columns, K = kh*kw*Cin. Each program owns a
(BLOCK_M x BLOCK_N) output tile and walks K tap by tap ((r, s) outer, Cin blocks inner, flattened into
one loop so the pipeliner sees a single loop). Each x tile is loaded once and fed to two tl.dot's,
one against w0 and one against wu, into two fp32 accumulators; the epilogue forms
    y = acc0 + bias0 + scale[b, co] * (accu + biasu).
Weights are read through a channels_last copy (Cin contiguous) so both GEMMs load them coalesced.

Backward (dy = dL/dy, all sums in fp32):
    dx  = conv_transpose(dy, w0) + conv_transpose(scale * dy, wu): ONE implicit GEMM over input pixels
          with K = 2*Cout*kh*kw, the operand [dy, scale*dy] formed on the fly from dy. With stride > 1
          the input pixels are split into stride_h*stride_w phases; each phase only meets the taps
          with (ih + pad - r*dil) % stride == 0, listed in a small host-built tap table, so no masked-out
          tap is multiplied (a 1x1 stride-2 conv does 1/4 of the naive work).
    dw0 = sum_m dy[m, co] x_col[m, k],  dwu = sum_m scale[b(m), co] dy[m, co] x_col[m, k]:
          one kernel, two accumulators, each dy and x tile read once; split-K over m into fp32
          partials summed on the host (deterministic; no atomics).
    dscale[b, co] = sum_hw dy * (conv(x, wu) + biasu),  dbias0 = sum_{b,hw} dy,  dbiasu = sum_{b,hw} scale * dy.

dscale: save vs recompute. conv(x, wu) costs as much as half the forward GEMM work; saving it costs
one extra activation write in the forward and one read in the backward, both bandwidth-bound. For
WRN-28-10's 640->640 3x3 conv at 8x8, batch 128, the recompute is ~60 GFLOP (~0.1 ms on an H100)
while the save + read is ~20 MB (~0.01 ms). So the forward saves yu = conv(x, wu) (input dtype, no bias)
when scale needs a gradient, and a bandwidth-bound reduction kernel forms sum(dy * yu) and sum(dy) per
(b, co). The price is memory: one more activation per hyper-conv kept for the backward; when scale
does not need a gradient (e.g. frozen hyper-parameters) nothing extra is saved.

Layout and sizes. On the GPU activations are read channels_last (an NCHW x or dy is copied once; y and dx
come back in the caller's format), so tile loads along Cin vectorise. Pixel offsets are int64 (tensors
over 2**31 elements are fine); row indices B*Ho*Wo and weight offsets stay int32. Tiles come from the
autotuner on the GPU (configs below, pruned per shape) and from one problem-sized config under
TRITON_INTERPRET. tl.dot needs tiles >= 16 wide, so Cin = 3 (the stem) pads its K blocks. The dw split-K
fills 2 programs per multiprocessor, as `triton_support.multiprocessors` counts them (the device's own, or
`target_multiprocessors(n)`); all block-size choices are in the "block-size heuristics" section.

File anatomy: hyper_conv2d_ref (pure torch), the torch path, the @jit kernels (_hyper_conv_*_kernel), the
block-size heuristics, the host launchers (_launch_*), the custom ops `hba_fast::hyper_conv2d_{fwd,dx,dw,dscale}`
with the forward's autograd formula (so torch.compile and CUDA graph capture work), and the public hyper_conv2d
with impl="auto" | "triton" | "torch" (decided by `triton_support.use_triton`). impl="torch" is the honest
baseline: one cuDNN/oneDNN conv against torch.cat([w0, wu]) (2*Cout outputs) and a per-sample combine,
differentiated by autograd. References: Triton's matmul tutorial (group-M swizzle), implicit-GEMM convolution
(cuDNN, CUTLASS), flash-attention's test rule.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .triton_support import KERNEL_DTYPES, check_impl, interpreting, jit, multiprocessors, tl, triton, use_triton

# ----------------------------------------------------------------------------- reference and torch path


def hyper_conv2d_ref(x, w0, wu, scale, bias0=None, biasu=None, stride=1, padding=0, dilation=1):
    """Pure-torch reference: two convolutions combined per sample and output channel."""
    y = F.conv2d(x, w0, bias0, stride, padding, dilation)
    yu = F.conv2d(x, wu, biasu, stride, padding, dilation)
    return y + scale[:, :, None, None].to(yu.dtype) * yu


def _hyper_conv2d_torch(x, w0, wu, scale, bias0, biasu, stride, padding, dilation):
    """One conv with 2*Cout outputs (torch.cat([w0, wu])), then y0 + scale * yu; plain autograd."""
    cout = w0.shape[0]
    bias = None
    if bias0 is not None or biasu is not None:
        b0 = bias0 if bias0 is not None else torch.zeros_like(biasu)
        bu = biasu if biasu is not None else torch.zeros_like(bias0)
        bias = torch.cat([b0, bu])  # (2*Cout,)
    y2 = F.conv2d(x, torch.cat([w0, wu]), bias, stride, padding, dilation)  # (B, 2*Cout, Ho, Wo)
    return torch.addcmul(y2[:, :cout], scale[:, :, None, None].to(y2.dtype), y2[:, cout:])


# ----------------------------------------------------------------------------- Triton kernels


@jit
def _swizzle(pid, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """Group-M ordering: GROUP_M row tiles share their column tiles while those are hot in L2."""
    in_group = GROUP_M * num_pid_n
    first_m = (pid // in_group) * GROUP_M
    group_m = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % group_m
    pid_n = (pid % in_group) // group_m
    return pid_m, pid_n


@jit
def _hyper_conv_fwd_kernel(
    x_ptr,  # (B, Cin, H, W), strides (sxb, sxc, sxh, sxw)
    w0_ptr,  # (Cout, Cin, KH, KW), strides (swo, swi, swh, sww); channels_last from the launcher
    wu_ptr,  # (Cout, Cin, KH, KW), same strides as w0
    scale_ptr,  # (B, Cout) fp32 contiguous
    b0_ptr,  # (Cout,) fp32; read only when HAS_BIAS
    bu_ptr,  # (Cout,) fp32; read only when HAS_BIAS
    y_ptr,  # (B, Cout, Ho, Wo), strides (syb, syc, syh, syw)
    yu_ptr,  # (B, Cout, Ho, Wo), strides of y; conv(x, wu) without bias, written only when SAVE_YU
    B, Cin, H, W, Cout, Ho, Wo,
    sxb, sxc, sxh, sxw, swo, swi, swh, sww, syb, syc, syh, syw,
    conv_sh, conv_sw, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr, SAVE_YU: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    M = B * Ho * Wo
    pid_m, pid_n = _swizzle(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(Cout, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixels (b, oh, ow)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # output channels
    mask_m = offs_m < M
    mask_n = offs_n < Cout
    ow = offs_m % Wo
    oh = (offs_m // Wo) % Ho
    b = offs_m // (Wo * Ho)
    x_row = b.to(tl.int64) * sxb
    ih0 = oh * conv_sh - pad_h
    iw0 = ow * conv_sw - pad_w
    offs_k = tl.arange(0, BLOCK_K)
    acc0 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    accu = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    n_kb = tl.cdiv(Cin, BLOCK_K)
    for t in range(KH * KW * n_kb):
        rs = t // n_kb
        r = rs // KW
        s = rs % KW
        ci = (t % n_kb) * BLOCK_K + offs_k
        ih = ih0 + r * dil_h
        iw = iw0 + s * dil_w
        row_ok = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_off = x_row + ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw
        a = tl.load(x_ptr + x_off[:, None] + ci[None, :] * sxc, mask=row_ok[:, None] & (ci < Cin)[None, :], other=0.0)
        w_off = ci[:, None] * swi + offs_n[None, :] * swo + r * swh + s * sww  # [BLOCK_K, BLOCK_N]
        w_mask = (ci < Cin)[:, None] & mask_n[None, :]
        acc0 = tl.dot(a, tl.load(w0_ptr + w_off, mask=w_mask, other=0.0), acc0, input_precision=DOT_PRECISION)
        accu = tl.dot(a, tl.load(wu_ptr + w_off, mask=w_mask, other=0.0), accu, input_precision=DOT_PRECISION)
    tile_mask = mask_m[:, None] & mask_n[None, :]
    sc = tl.load(scale_ptr + b[:, None] * Cout + offs_n[None, :], mask=tile_mask, other=0.0)
    if HAS_BIAS:
        y = acc0 + tl.load(b0_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
        y += sc * (accu + tl.load(bu_ptr + offs_n, mask=mask_n, other=0.0)[None, :])
    else:
        y = acc0 + sc * accu
    y_off = (b.to(tl.int64) * syb + oh.to(tl.int64) * syh + ow.to(tl.int64) * syw)[:, None] + offs_n[None, :] * syc
    tl.store(y_ptr + y_off, y.to(y_ptr.dtype.element_ty), mask=tile_mask)
    if SAVE_YU:
        tl.store(yu_ptr + y_off, accu.to(yu_ptr.dtype.element_ty), mask=tile_mask)


@jit
def _hyper_conv_dx_kernel(
    dy_ptr,  # (B, Cout, Ho, Wo), strides (sdb, sdc, sdh, sdw)
    w0_ptr,  # (Cout, Cin, KH, KW), strides (swo, swi, swh, sww)
    wu_ptr,  # (Cout, Cin, KH, KW), same strides as w0
    scale_ptr,  # (B, Cout) fp32 contiguous
    taps_ptr,  # (conv_sh*conv_sw, KH*KW, 4) int32: per phase, taps (r, s, oh - ih', ow - iw') that reach it
    ntaps_ptr,  # (conv_sh*conv_sw,) int32: number of valid taps per phase
    dx_ptr,  # (B, Cin, H, W), strides (sxb, sxc, sxh, sxw)
    B, Cin, H, W, Cout, Ho, Wo,
    sdb, sdc, sdh, sdw, swo, swi, swh, sww, sxb, sxc, sxh, sxw,
    conv_sh, conv_sw,
    KH: tl.constexpr, KW: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    phase = tl.program_id(1)  # input pixels with ih % conv_sh == ph and iw % conv_sw == pw
    ph = phase // conv_sw
    pw = phase % conv_sw
    Hp = (H - ph + conv_sh - 1) // conv_sh
    Wp = (W - pw + conv_sw - 1) // conv_sw
    Hmax = (H + conv_sh - 1) // conv_sh
    Wmax = (W + conv_sw - 1) // conv_sw
    pid_m, pid_n = _swizzle(tl.program_id(0), tl.cdiv(B * Hmax * Wmax, BLOCK_M), tl.cdiv(Cin, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (b, ih', iw') within the phase
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # input channels
    mask_m = offs_m < B * Hp * Wp
    mask_n = offs_n < Cin
    iwp = offs_m % Wp
    ihp = (offs_m // Wp) % Hp
    b = offs_m // (Wp * Hp)
    dy_row = b.to(tl.int64) * sdb
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    n_kb = tl.cdiv(Cout, BLOCK_K)
    n_taps = tl.load(ntaps_ptr + phase)
    for t in range(n_taps * n_kb):
        tap = taps_ptr + (phase * (KH * KW) + t // n_kb) * 4
        r = tl.load(tap)
        s = tl.load(tap + 1)
        oh = ihp + tl.load(tap + 2)
        ow = iwp + tl.load(tap + 3)
        co = (t % n_kb) * BLOCK_K + offs_k
        row_ok = mask_m & (oh >= 0) & (oh < Ho) & (ow >= 0) & (ow < Wo)
        g_mask = row_ok[:, None] & (co < Cout)[None, :]
        g_off = (dy_row + oh.to(tl.int64) * sdh + ow.to(tl.int64) * sdw)[:, None] + co[None, :] * sdc
        g = tl.load(dy_ptr + g_off, mask=g_mask, other=0.0)  # [BLOCK_M, BLOCK_K]
        sc = tl.load(scale_ptr + b[:, None] * Cout + co[None, :], mask=g_mask, other=0.0)
        gs = (g.to(tl.float32) * sc).to(g.dtype)
        w_off = co[:, None] * swo + offs_n[None, :] * swi + r * swh + s * sww  # [BLOCK_K, BLOCK_N]
        w_mask = (co < Cout)[:, None] & mask_n[None, :]
        acc = tl.dot(g, tl.load(w0_ptr + w_off, mask=w_mask, other=0.0), acc, input_precision=DOT_PRECISION)
        acc = tl.dot(gs, tl.load(wu_ptr + w_off, mask=w_mask, other=0.0), acc, input_precision=DOT_PRECISION)
    ih = ihp * conv_sh + ph
    iw = iwp * conv_sw + pw
    dx_off = (b.to(tl.int64) * sxb + ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw)[:, None] + offs_n[None, :] * sxc
    tl.store(dx_ptr + dx_off, acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@jit
def _hyper_conv_dw_kernel(
    x_ptr,  # (B, Cin, H, W), strides (sxb, sxc, sxh, sxw)
    dy_ptr,  # (B, Cout, Ho, Wo), strides (sdb, sdc, sdh, sdw)
    scale_ptr,  # (B, Cout) fp32 contiguous
    dw_ptr,  # (SPLIT, 2, Cout, Cin, KH, KW) fp32 contiguous: split-K partials of dw0 ([:, 0]) and dwu ([:, 1])
    B, Cin, H, W, Cout, Ho, Wo,
    sxb, sxc, sxh, sxw, sdb, sdc, sdh, sdw,
    conv_sh, conv_sw, pad_h, pad_w, dil_h, dil_w, m_per_split,
    KH: tl.constexpr, KW: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # GEMM view: rows = Cout (BLOCK_M), columns = (tap, Cin) (BLOCK_N), reduction over output pixels (BLOCK_K).
    n_cb = tl.cdiv(Cin, BLOCK_N)
    pid_m, pid_n = _swizzle(tl.program_id(0), tl.cdiv(Cout, BLOCK_M), KH * KW * n_cb, GROUP_M)
    split = tl.program_id(1)
    rs = pid_n // n_cb
    r = rs // KW
    s = rs % KW
    offs_co = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_ci = (pid_n % n_cb) * BLOCK_N + tl.arange(0, BLOCK_N)
    co_ok = offs_co < Cout
    ci_ok = offs_ci < Cin
    acc0 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    accu = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    m_start = split * m_per_split
    m_end = tl.minimum(m_start + m_per_split, B * Ho * Wo)
    for m0 in range(m_start, m_end, BLOCK_K):
        offs_m = m0 + tl.arange(0, BLOCK_K)
        m_ok = offs_m < m_end
        ow = offs_m % Wo
        oh = (offs_m // Wo) % Ho
        b = offs_m // (Wo * Ho)
        ih = oh * conv_sh - pad_h + r * dil_h
        iw = ow * conv_sw - pad_w + s * dil_w
        x_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_off = (b.to(tl.int64) * sxb + ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw)[:, None] + offs_ci[None, :] * sxc
        xt = tl.load(x_ptr + x_off, mask=x_ok[:, None] & ci_ok[None, :], other=0.0)  # [BLOCK_K, BLOCK_N]
        g_mask = m_ok[:, None] & co_ok[None, :]
        g_off = (b.to(tl.int64) * sdb + oh.to(tl.int64) * sdh + ow.to(tl.int64) * sdw)[:, None] + offs_co[None, :] * sdc
        g = tl.load(dy_ptr + g_off, mask=g_mask, other=0.0)  # [BLOCK_K, BLOCK_M]
        sc = tl.load(scale_ptr + b[:, None] * Cout + offs_co[None, :], mask=g_mask, other=0.0)
        gs = (g.to(tl.float32) * sc).to(g.dtype)
        acc0 = tl.dot(tl.trans(g), xt, acc0, input_precision=DOT_PRECISION)
        accu = tl.dot(tl.trans(gs), xt, accu, input_precision=DOT_PRECISION)
    numel = Cout * Cin * KH * KW
    out = dw_ptr + split.to(tl.int64) * (2 * numel)
    w_off = offs_co[:, None] * (Cin * KH * KW) + offs_ci[None, :] * (KH * KW) + r * KW + s
    w_mask = co_ok[:, None] & ci_ok[None, :]
    tl.store(out + w_off, acc0, mask=w_mask)
    tl.store(out + numel + w_off, accu, mask=w_mask)


@jit
def _hyper_conv_dscale_kernel(
    dy_ptr,  # (B, Cout, Ho, Wo), strides (sdb, sdc, sdh, sdw)
    yu_ptr,  # (B, Cout, Ho, Wo), strides (sub, suc, suh, suw); read only when HAS_YU
    s1_ptr,  # (B, Cout) fp32: sum_hw dy * yu
    s0_ptr,  # (B, Cout) fp32: sum_hw dy
    Cout, Ho, Wo, sdb, sdc, sdh, sdw, sub, suc, suh, suw,
    HAS_YU: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < Cout
    acc0 = tl.zeros((BLOCK_C,), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for hw0 in range(0, Ho * Wo, BLOCK_HW):
        hw = hw0 + tl.arange(0, BLOCK_HW)
        oh = (hw // Wo).to(tl.int64)
        ow = (hw % Wo).to(tl.int64)
        mask = (hw < Ho * Wo)[:, None] & c_ok[None, :]
        g = tl.load(dy_ptr + (b * sdb + oh * sdh + ow * sdw)[:, None] + offs_c[None, :] * sdc, mask=mask, other=0.0)
        acc0 += tl.sum(g.to(tl.float32), axis=0)
        if HAS_YU:
            u = tl.load(yu_ptr + (b * sub + oh * suh + ow * suw)[:, None] + offs_c[None, :] * suc, mask=mask, other=0.0)
            acc1 += tl.sum(g.to(tl.float32) * u.to(tl.float32), axis=0)
    tl.store(s0_ptr + b * Cout + offs_c, acc0, mask=c_ok)
    tl.store(s1_ptr + b * Cout + offs_c, acc1, mask=c_ok)


# ----------------------------------------------------------------------------- block-size heuristics

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) candidates for the GPU autotuner; pruned per shape. The
# narrow ones serve the 16- and 32-channel layers (WRN-40-2's first group, the stem) without padding K or N:
# tiles wider than the channel count are pruned. bench/compile_report.py shows registers, spills and shared
# memory of each for sm_90: with two fp32 accumulators, 128x64 tiles on 4 warps spill a little (16-184 bytes),
# so the same tile on 8 warps (no spill) is offered too; which wins is the autotuner's call on the GPU.
_GPU_CONFIGS = {
    "fwd": [(128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (128, 64, 64, 8, 3), (64, 128, 64, 4, 4), (128, 128, 32, 8, 4),
            (128, 32, 64, 4, 4), (64, 64, 64, 4, 3), (128, 32, 32, 4, 4), (128, 32, 16, 4, 4), (128, 16, 16, 4, 4)],
    "dx": [(128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (128, 64, 64, 8, 3), (64, 128, 64, 4, 4), (128, 128, 32, 8, 4),
           (128, 32, 64, 4, 4), (64, 64, 64, 4, 3), (128, 32, 32, 4, 4), (128, 32, 16, 4, 4), (128, 16, 16, 4, 4)],
    "dw": [(128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (128, 64, 64, 8, 3), (64, 128, 64, 4, 4), (64, 64, 128, 4, 3),
           (32, 64, 128, 4, 3), (16, 64, 128, 4, 3), (32, 32, 128, 4, 3), (16, 16, 128, 4, 3)],
}
# Which problem sizes each launcher's tile dimensions cover (names of kernel arguments).
_TILE_DIMS = {"fwd": (None, "Cout", "Cin"), "dx": (None, "Cin", "Cout"), "dw": ("Cout", "Cin", None)}
_TUNE_KEYS = {
    "fwd": ["B", "Cin", "H", "W", "Cout", "KH", "conv_sh", "dil_h"],
    "dx": ["B", "Cin", "H", "W", "Cout", "KH", "conv_sh"],
    "dw": ["B", "Cin", "H", "W", "Cout", "KH", "conv_sh", "m_per_split"],
}


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _tile_cap(n: int) -> int:
    return max(16, _next_pow2(n))  # tl.dot needs every tile dimension >= 16


def _prune(kind, configs, named_args, **kwargs):
    """Drop configs whose tiles are far wider than the problem (e.g. BLOCK_N=128 for Cout=16)."""
    dims = _TILE_DIMS[kind]
    blocks = ("BLOCK_M", "BLOCK_N", "BLOCK_K")
    keep = [c for c in configs
            if all(d is None or c.kwargs[blk] <= _tile_cap(named_args[d]) for d, blk in zip(dims, blocks))]
    return keep or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


@functools.cache
def _tuned(kind: str):
    """The autotuned GPU kernel for `kind`; the interpreter uses `_interp_blocks` instead (one config)."""
    kernel = {"fwd": _hyper_conv_fwd_kernel, "dx": _hyper_conv_dx_kernel, "dw": _hyper_conv_dw_kernel}[kind]
    configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w,
                             num_stages=st) for bm, bn, bk, w, st in _GPU_CONFIGS[kind]]
    prune = {"early_config_prune": functools.partial(_prune, kind)}
    return triton.autotune(configs, key=_TUNE_KEYS[kind], prune_configs_by=prune)(kernel)


def _interp_blocks(m: int, n: int, k: int) -> dict:
    """Interpreter cost ~ programs x loop trips (numpy does the tile math): few, problem-sized tiles."""
    caps = (min(64, _tile_cap(m)), min(64, _tile_cap(n)), min(64, _tile_cap(k)))
    return {"BLOCK_M": caps[0], "BLOCK_N": caps[1], "BLOCK_K": caps[2], "GROUP_M": 8}


def _dw_split(m: int, tiles: int, device: torch.device) -> int:
    """Rows of the split-K reduction per program: enough programs to fill the GPU, >= 1024 rows each; no split
    where `multiprocessors` is None (off CUDA, the interpreter) unless `target_multiprocessors` sets a GPU size."""
    sms = multiprocessors(device)
    if sms is None:
        return m
    target = 2 * sms
    split = max(1, min(target // max(tiles, 1), triton.cdiv(m, 1024)))
    return triton.cdiv(triton.cdiv(m, split), 256) * 256


def _launch(kind, grid, args, interp_blocks):
    if interpreting():
        kernel = {"fwd": _hyper_conv_fwd_kernel, "dx": _hyper_conv_dx_kernel, "dw": _hyper_conv_dw_kernel}[kind]
        kernel[grid(interp_blocks)](*args, **interp_blocks)
    else:
        _tuned(kind)[grid](*args)


# ----------------------------------------------------------------------------- host launchers


def _pair(v, name: str) -> tuple[int, int]:
    pair = (v, v) if isinstance(v, int) else tuple(v)
    if len(pair) != 2 or not all(isinstance(p, int) for p in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return pair


def _kernel_layout(t: torch.Tensor) -> torch.Tensor:
    """On the GPU the kernels read activations as channels_last (Cin contiguous: vectorised tile loads); an
    NCHW tensor is copied once. The interpreter keeps the caller's strides, so the tests cover both."""
    return t.contiguous(memory_format=torch.channels_last) if t.is_cuda else t


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs follow torch's conv setting (TF32 by default on Ampere+), so the kernel and cuDNN agree;
    # the setting only matters for fp32 operands (fp16/bf16 always run on the tensor cores).
    if dtype == torch.float32 and (interpreting() or not torch.backends.cudnn.allow_tf32):
        return "ieee"
    return "tf32"


@functools.cache  # unbounded: a captured CUDA graph keeps pointing at these tables (few: one per conv geometry)
def _tap_table(kh, kw, sh, sw, ph, pw, dh, dw, device):
    """Per stride phase (ih % sh, iw % sw): the taps (r, s, oh - ih', ow - iw') that reach it."""
    table = torch.zeros(sh * sw, kh * kw, 4, dtype=torch.int32)  # (phases, taps, 4)
    counts = torch.zeros(sh * sw, dtype=torch.int32)  # (phases,)
    for a in range(sh):
        for c in range(sw):
            p = a * sw + c
            rows = [(r, (a + ph - r * dh) // sh) for r in range(kh) if (a + ph - r * dh) % sh == 0]
            cols = [(s, (c + pw - s * dw) // sw) for s in range(kw) if (c + pw - s * dw) % sw == 0]
            for r, doh in rows:
                for s, dow in cols:
                    table[p, counts[p]] = torch.tensor([r, s, doh, dow], dtype=torch.int32)
                    counts[p] += 1
    return table.to(device), counts.to(device)


def _launch_fwd(x, w0p, wup, scale32, b0, bu, stride, padding, dilation, save_yu, out_format):
    B, Cin, H, W = x.shape
    Cout, _, KH, KW = w0p.shape
    Ho = (H + 2 * padding[0] - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    Wo = (W + 2 * padding[1] - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    y = torch.empty(B, Cout, Ho, Wo, device=x.device, dtype=x.dtype, memory_format=out_format)  # (B, Cout, Ho, Wo)
    yu = torch.empty_like(y) if save_yu else None  # (B, Cout, Ho, Wo): conv(x, wu), kept for dscale
    has_bias = b0 is not None
    args = (x, w0p, wup, scale32, b0 if has_bias else scale32, bu if has_bias else scale32, y,
            yu if save_yu else y, B, Cin, H, W, Cout, Ho, Wo, *x.stride(), *w0p.stride(), *y.stride(),
            *stride, *padding, *dilation, KH, KW, has_bias, save_yu, _dot_precision(x.dtype))
    def grid(meta):
        return (triton.cdiv(B * Ho * Wo, meta["BLOCK_M"]) * triton.cdiv(Cout, meta["BLOCK_N"]),)
    _launch("fwd", grid, args, _interp_blocks(B * Ho * Wo, Cout, Cin))
    return y, yu


def _launch_dx(dy, w0p, wup, scale32, x_shape, x_format, stride, padding, dilation):
    B, Cin, H, W = x_shape
    Cout, _, KH, KW = w0p.shape
    Ho, Wo = dy.shape[2:]
    dx = torch.empty(B, Cin, H, W, device=dy.device, dtype=dy.dtype, memory_format=x_format)  # (B, Cin, H, W)
    taps, ntaps = _tap_table(KH, KW, *stride, *padding, *dilation, dy.device)
    m_max = B * triton.cdiv(H, stride[0]) * triton.cdiv(W, stride[1])
    args = (dy, w0p, wup, scale32, taps, ntaps, dx, B, Cin, H, W, Cout, Ho, Wo, *dy.stride(), *w0p.stride(),
            *dx.stride(), *stride, KH, KW, _dot_precision(dy.dtype))
    def grid(meta):
        return (triton.cdiv(m_max, meta["BLOCK_M"]) * triton.cdiv(Cin, meta["BLOCK_N"]), stride[0] * stride[1])
    _launch("dx", grid, args, _interp_blocks(m_max, Cin, Cout))
    return dx


def _launch_dw_pair(x, dy, scale32, w_shape, stride, padding, dilation, m_per_split=None):
    """Returns fp32 (2, Cout, Cin, KH, KW): dw0 and dwu."""
    B, Cin, H, W = x.shape
    Cout, _, KH, KW = w_shape
    Ho, Wo = dy.shape[2:]
    m = B * Ho * Wo
    if m_per_split is None:
        m_per_split = _dw_split(m, triton.cdiv(Cout, 64) * KH * KW * triton.cdiv(Cin, 64), x.device)
    split = triton.cdiv(m, m_per_split)
    # split-K partials (SPLIT, 2, ...); one split writes the result directly (same layout, no copy, no view)
    parts = torch.empty((split, 2, Cout, Cin, KH, KW) if split > 1 else (2, Cout, Cin, KH, KW), device=x.device,
                        dtype=torch.float32)
    args = (x, dy, scale32, parts, B, Cin, H, W, Cout, Ho, Wo, *x.stride(), *dy.stride(), *stride, *padding,
            *dilation, m_per_split, KH, KW, _dot_precision(x.dtype))
    def grid(meta):
        return (triton.cdiv(Cout, meta["BLOCK_M"]) * KH * KW * triton.cdiv(Cin, meta["BLOCK_N"]), split)
    _launch("dw", grid, args, _interp_blocks(Cout, Cin, m_per_split))
    return parts if split == 1 else parts.sum(0)


def _launch_dw(x, dy, scale32, w_shape, stride, padding, dilation, m_per_split=None):
    """Returns fp32 (dw0, dwu), each (Cout, Cin, KH, KW)."""
    dw = _launch_dw_pair(x, dy, scale32, w_shape, stride, padding, dilation, m_per_split)
    return dw[0], dw[1]


def _launch_dscale(dy, yu):
    """Returns fp32 (sum_hw dy * yu, sum_hw dy), each (B, Cout); the first is zeros when yu is None."""
    B, Cout, Ho, Wo = dy.shape
    s1 = torch.empty(B, Cout, device=dy.device, dtype=torch.float32)  # (B, Cout)
    s0 = torch.empty(B, Cout, device=dy.device, dtype=torch.float32)  # (B, Cout)
    block_c = min(64, _tile_cap(Cout))
    block_hw = 64 if interpreting() else max(16, min(256, 8192 // block_c))
    u = yu if yu is not None else dy
    _hyper_conv_dscale_kernel[(B, triton.cdiv(Cout, block_c))](
        dy, u, s1, s0, Cout, Ho, Wo, *dy.stride(), *u.stride(), yu is not None, block_hw, block_c)
    return s1, s0


# ----------------------------------------------------------------------------- custom ops and autograd
# Each launch is a torch.library custom op: torch.compile sees one opaque node per launch (it never traces the Triton
# launch, its autotuner or the tap table; tracing them fails), AOTAutograd differentiates through the formula
# registered below, and a CUDA graph capture records the launches (the autotuner runs at the first, eager call, before
# any capture). The fake implementations give every output's shape, dtype and strides without running anything.


def _out_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


@torch.library.custom_op("hba_fast::hyper_conv2d_fwd", mutates_args=())
def _fwd_op(x: Tensor, w0p: Tensor, wup: Tensor, scale32: Tensor, b0: Tensor | None, bu: Tensor | None,
            stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], save_yu: bool,
            channels_last: bool) -> tuple[Tensor, Tensor]:
    """y (B, Cout, Ho, Wo) in the caller's memory format, and yu = conv(x, wu) (empty (0,) unless save_yu)."""
    y, yu = _launch_fwd(x, w0p, wup, scale32, b0, bu, tuple(stride), tuple(padding), tuple(dilation), save_yu,
                        _out_format(channels_last))
    return y, yu if yu is not None else y.new_empty(0)


@_fwd_op.register_fake
def _fwd_fake(x, w0p, wup, scale32, b0, bu, stride, padding, dilation, save_yu, channels_last):
    B, _, H, W = x.shape
    Cout, _, KH, KW = w0p.shape
    Ho = (H + 2 * padding[0] - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    Wo = (W + 2 * padding[1] - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    y = torch.empty((B, Cout, Ho, Wo), device=x.device, dtype=x.dtype, memory_format=_out_format(channels_last))
    return y, torch.empty_like(y) if save_yu else y.new_empty(0)


@torch.library.custom_op("hba_fast::hyper_conv2d_dx", mutates_args=())
def _dx_op(dy: Tensor, w0p: Tensor, wup: Tensor, scale32: Tensor, x: Tensor, stride: Sequence[int],
           padding: Sequence[int], dilation: Sequence[int], channels_last: bool) -> Tensor:
    """dx (B, Cin, H, W) like the forward's input x (read for its shape only)."""
    return _launch_dx(dy, w0p, wup, scale32, x.shape, _out_format(channels_last), tuple(stride), tuple(padding),
                      tuple(dilation))


@_dx_op.register_fake
def _dx_fake(dy, w0p, wup, scale32, x, stride, padding, dilation, channels_last):
    return torch.empty(x.shape, device=dy.device, dtype=dy.dtype, memory_format=_out_format(channels_last))


@torch.library.custom_op("hba_fast::hyper_conv2d_dw", mutates_args=())
def _dw_op(x: Tensor, dy: Tensor, scale32: Tensor, w0p: Tensor, stride: Sequence[int], padding: Sequence[int],
           dilation: Sequence[int]) -> Tensor:
    """fp32 (2, Cout, Cin, KH, KW): dw0 and dwu (w0p is read for its shape only)."""
    return _launch_dw_pair(x, dy, scale32, w0p.shape, tuple(stride), tuple(padding), tuple(dilation))


@_dw_op.register_fake
def _dw_fake(x, dy, scale32, w0p, stride, padding, dilation):
    return x.new_empty((2, *w0p.shape), dtype=torch.float32)


@torch.library.custom_op("hba_fast::hyper_conv2d_dscale", mutates_args=())
def _dscale_op(dy: Tensor, yu: Tensor | None) -> tuple[Tensor, Tensor]:
    """fp32 (B, Cout) each: sum_hw dy * yu (zeros without yu) and sum_hw dy."""
    return _launch_dscale(dy, yu)


@_dscale_op.register_fake
def _dscale_fake(dy, yu):
    return dy.new_empty(dy.shape[:2], dtype=torch.float32), dy.new_empty(dy.shape[:2], dtype=torch.float32)


def _fwd_setup(ctx, inputs, output):
    x, w0p, wup, scale32, b0, bu, stride, padding, dilation, save_yu, channels_last = inputs
    ctx.save_for_backward(x, w0p, wup, scale32, bu, output[1])
    ctx.conv, ctx.channels_last, ctx.has_yu = (stride, padding, dilation), channels_last, save_yu


def _fwd_backward(ctx, dy, _dyu):
    """The gradients of the module docstring; the casts of the inputs (w0 -> w0p, scale -> scale32, biases -> fp32)
    are ordinary autograd ops in `hyper_conv2d`, so these come back in each input's own dtype."""
    x, w0p, wup, scale32, bu, yu = ctx.saved_tensors
    need = ctx.needs_input_grad
    dy = _kernel_layout(dy.to(x.dtype))
    dx = dw0 = dwu = dscale = db0 = dbu = None
    if need[0]:
        dx = _dx_op(dy, w0p, wup, scale32, x, *ctx.conv, ctx.channels_last)
    if need[1] or need[2]:
        dw = _dw_op(x, dy, scale32, w0p, *ctx.conv)
        dw0, dwu = dw[0].to(w0p.dtype), dw[1].to(wup.dtype)
    if need[3] or need[4] or need[5]:
        assert ctx.has_yu or not need[3], "scale needs a gradient but the forward did not save conv(x, wu)"
        s1, s0 = _dscale_op(dy, yu if need[3] else None)
        dscale = (s1 if bu is None else s1 + bu * s0) if need[3] else None
        db0 = s0.sum(0) if need[4] else None
        dbu = (scale32 * s0).sum(0) if need[5] else None
    return dx, dw0, dwu, dscale, db0, dbu, None, None, None, None, None


_fwd_op.register_autograd(_fwd_backward, setup_context=_fwd_setup)


# ----------------------------------------------------------------------------- public function


def _check_inputs(x, w0, wu, scale, bias0, biasu):
    if not all(isinstance(t, torch.Tensor) for t in (x, w0, wu, scale)):
        raise TypeError("hyper_conv2d: x, w0, wu and scale must be torch.Tensors")
    if x.dim() != 4:
        raise ValueError(f"hyper_conv2d: x must be (B, Cin, H, W), got shape {tuple(x.shape)}")
    if w0.dim() != 4 or wu.shape != w0.shape:
        raise ValueError(f"hyper_conv2d: w0 and wu must both be (Cout, Cin, kh, kw), got {tuple(w0.shape)} and "
                         f"{tuple(wu.shape)}")
    B, Cin = x.shape[:2]
    Cout = w0.shape[0]
    if w0.shape[1] != Cin:
        raise ValueError(f"hyper_conv2d: w0 has {w0.shape[1]} input channels but x has {Cin} (groups are not "
                         "supported)")
    if tuple(scale.shape) != (B, Cout):
        raise ValueError(f"hyper_conv2d: scale must be (B, Cout) = ({B}, {Cout}), got {tuple(scale.shape)}")
    for name, b in (("bias0", bias0), ("biasu", biasu)):
        if b is not None and (not isinstance(b, torch.Tensor) or tuple(b.shape) != (Cout,)):
            raise ValueError(f"hyper_conv2d: {name} must be None or a (Cout,) = ({Cout},) tensor, got "
                             f"{getattr(b, 'shape', b)!r}")
    tensors = [t for t in (x, w0, wu, scale, bias0, biasu) if t is not None]
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"hyper_conv2d: all tensors must be on one device, got {sorted(map(str, devices))}")
    if not all(t.is_floating_point() for t in tensors):
        raise TypeError("hyper_conv2d: all tensors must be floating point, got "
                        f"{[str(t.dtype) for t in tensors]}")


def hyper_conv2d(x: torch.Tensor, w0: torch.Tensor, wu: torch.Tensor, scale: torch.Tensor,
                 bias0: torch.Tensor | None = None, biasu: torch.Tensor | None = None,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, impl: str = "auto") -> torch.Tensor:
    """y = conv(x, w0) + scale[:, :, None, None] * conv(x, wu) (+ bias0 + scale * biasu); see the module docstring.

    impl: "auto" (Triton on CUDA float32/float16/bfloat16 tensors, torch elsewhere) | "triton" (CUDA, or CPU
    under TRITON_INTERPRET=1) | "torch" (one conv with 2*Cout outputs); see `triton_support.use_triton`.
    Differentiable in x, w0, wu, scale, bias0 and biasu.
    """
    check_impl(impl, "hyper_conv2d")
    _check_inputs(x, w0, wu, scale, bias0, biasu)
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"hyper_conv2d: need stride >= 1, dilation >= 1, padding >= 0; got stride={stride}, "
                         f"padding={padding}, dilation={dilation}")
    # "auto" leaves dtypes the kernel does not take (e.g. float64) to the torch path, as hyper_batch_norm does
    if not use_triton(impl, x, "hyper_conv2d"):
        return _hyper_conv2d_torch(x, w0, wu, scale, bias0, biasu, stride, padding, dilation)
    if torch.is_autocast_enabled(x.device.type):  # F.conv2d would run in the autocast dtype: do the same
        dtype = torch.get_autocast_dtype(x.device.type)
        x, w0, wu = x.to(dtype), w0.to(dtype), wu.to(dtype)
    if not (x.dtype == w0.dtype == wu.dtype) or x.dtype not in KERNEL_DTYPES:
        raise TypeError(f"hyper_conv2d(impl='triton'): x, w0, wu must share one dtype of float32/float16/bfloat16, "
                        f"got {x.dtype}, {w0.dtype}, {wu.dtype}; cast them or run under torch.autocast")
    kh, kw = w0.shape[2:]
    Ho = (x.shape[2] + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (x.shape[3] + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if Ho < 1 or Wo < 1 or x.numel() == 0:
        raise ValueError(f"hyper_conv2d: empty input or output: x {tuple(x.shape)}, output {Ho}x{Wo}")
    w0p = w0.contiguous(memory_format=torch.channels_last)  # Cin contiguous: coalesced weight tiles
    wup = wu.contiguous(memory_format=torch.channels_last)
    scale32 = scale.to(torch.float32).contiguous()  # (B, Cout)
    b0 = bu = None
    if bias0 is not None or biasu is not None:
        ref = bias0 if bias0 is not None else biasu
        b0 = bias0.float() if bias0 is not None else torch.zeros_like(ref, dtype=torch.float32)
        bu = biasu.float() if biasu is not None else torch.zeros_like(ref, dtype=torch.float32)
    save_yu = torch.is_grad_enabled() and scale.requires_grad  # conv(x, wu) is kept only for dscale
    channels_last = _memory_format(x) == torch.channels_last  # y and dx come back in the caller's format
    with torch.autocast(x.device.type, enabled=False):
        y, _ = _fwd_op(_kernel_layout(x), w0p, wup, scale32, b0, bu, stride, padding, dilation, save_yu,
                       channels_last)
    return y
