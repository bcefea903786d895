"""hyper_conv2d: Triton kernel (forward and all six gradients) and the torch path against an fp64 reference.

Rule (flash-attention's): |kernel - truth| <= 2 * |plain torch at the same dtype - truth| + atol, with the
truth computed by `hyper_conv2d_ref` in float64 and atol a small fraction of the truth's magnitude. On CPU
the kernels run under TRITON_INTERPRET=1 in fp32 on small, odd shapes; `gpu` tests cover bf16/fp16 on the
real conv shapes of WRN-40-2, WRN-28-10 and ResNet-50.
"""
import os

import pytest
import torch

from hba_fast.kernels import hyper_conv as hc
from hba_fast.kernels.hyper_conv import hyper_conv2d, hyper_conv2d_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ATOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}  # x max|truth|
NAMES = ("y", "dx", "dw0", "dwu", "dscale", "dbias0", "dbiasu")


def _make(B, Cin, Cout, H, W, k, bias, channels_last, device=DEVICE, seed=0):
    """fp64 leaf tensors (x, w0, wu, scale, bias0, biasu); bias is 'both', 'u' (biasu only) or None."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, Cin, H, W, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fan = (Cin * k * k) ** -0.5
    w0 = torch.randn(Cout, Cin, k, k, generator=g, dtype=torch.float64) * fan
    wu = torch.randn(Cout, Cin, k, k, generator=g, dtype=torch.float64) * fan
    scale = torch.randn(B, Cout, generator=g, dtype=torch.float64)
    b0 = torch.randn(Cout, generator=g, dtype=torch.float64) if bias == "both" else None
    bu = torch.randn(Cout, generator=g, dtype=torch.float64) if bias in ("both", "u") else None
    return [None if t is None else t.to(device) for t in (x, w0, wu, scale, b0, bu)]


def _run(fn, leaves, dtype, grad_out, conv):
    """Forward and the gradients of every non-None leaf, with the leaves cast to dtype."""
    ins = [None if t is None else t.detach().to(dtype).requires_grad_(True) for t in leaves]
    y = fn(*ins, *conv)
    live = [t for t in ins if t is not None]
    grads = iter(torch.autograd.grad(y, live, grad_out.to(y.dtype)))
    return [y] + [None if t is None else next(grads) for t in ins]


def _check(leaves, conv, dtype, kernel_fn):
    with torch.no_grad():
        shape = hyper_conv2d_ref(*leaves, *conv).shape
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(leaves[0].device)
    truth = _run(hyper_conv2d_ref, leaves, torch.float64, grad_out, conv)
    plain = _run(hyper_conv2d_ref, leaves, dtype, grad_out, conv)
    kern = _run(kernel_fn, leaves, dtype, grad_out, conv)
    for name, t, p, k in zip(NAMES, truth, plain, kern):
        if t is None:
            assert k is None, name
            continue
        assert k.shape == t.shape and k.dtype == dtype, (name, k.shape, k.dtype)
        err_k = (k.double() - t).abs().max().item()
        err_p = (p.double() - t).abs().max().item()
        atol = ATOL[dtype] * max(t.abs().max().item(), 1e-3)
        assert err_k <= 2 * err_p + atol, f"{name}: kernel error {err_k:.3g} > 2 x torch error {err_p:.3g} + {atol:.3g}"
    return kern


def _triton(x, w0, wu, scale, b0, bu, stride, padding, dilation):
    return hyper_conv2d(x, w0, wu, scale, b0, bu, stride, padding, dilation, impl="triton")


def _torch(x, w0, wu, scale, b0, bu, stride, padding, dilation):
    return hyper_conv2d(x, w0, wu, scale, b0, bu, stride, padding, dilation, impl="torch")


# (B, Cin, Cout, H, W, k, stride, padding, dilation, bias, channels_last)
SWEEP = [
    pytest.param(2, 5, 7, 9, 9, 3, 1, 1, 1, "both", False, id="3x3-s1-odd-nchw-bias"),
    pytest.param(2, 5, 7, 9, 8, 3, 2, 1, 1, None, True, id="3x3-s2-odd-cl-nobias"),
    pytest.param(3, 6, 5, 7, 7, 1, 2, 0, 1, "both", False, id="1x1-s2-nchw-bias"),
    pytest.param(2, 4, 6, 9, 9, 3, 1, 2, 2, "u", True, id="3x3-dil2-cl-biasu"),
    pytest.param(2, 3, 16, 11, 11, 7, 2, 3, 1, None, False, id="7x7-s2-stem"),
    pytest.param(2, 70, 66, 5, 5, 1, 1, 0, 1, "both", True, id="1x1-multi-tile-cl"),
    pytest.param(1, 33, 17, 6, 5, 3, (2, 1), (1, 0), 1, None, False, id="3x3-anisotropic"),
    pytest.param(2, 6, 9, 9, 10, 3, 2, 2, 2, "both", True, id="3x3-s2-dil2-empty-phases"),
]


@pytest.mark.parametrize("B,Cin,Cout,H,W,k,stride,padding,dilation,bias,cl", SWEEP)
def test_triton_matches_reference(B, Cin, Cout, H, W, k, stride, padding, dilation, bias, cl):
    leaves = _make(B, Cin, Cout, H, W, k, bias, cl)
    kern = _check(leaves, (stride, padding, dilation), torch.float32, _triton)
    fmt = torch.channels_last if cl else torch.contiguous_format
    assert kern[0].is_contiguous(memory_format=fmt) and kern[1].is_contiguous(memory_format=fmt)


def test_triton_fp16_in_the_interpreter():
    """Half-precision casts and fp32 accumulation (the interpreter's bf16 tl.dot is broken, fp16 is not)."""
    leaves = _make(2, 20, 24, 8, 8, 3, "both", True)
    _check(leaves, (2, 1, 1), torch.float16, _triton)


def test_torch_path_matches_reference_exactly_in_fp64():
    leaves = _make(2, 5, 7, 9, 9, 3, "both", True, device="cpu")
    g = torch.randn(2, 7, 5, 5, dtype=torch.float64)
    a = _run(hyper_conv2d_ref, leaves, torch.float64, g, (2, 1, 1))
    b = _run(_torch, leaves, torch.float64, g, (2, 1, 1))
    for name, u, v in zip(NAMES, a, b):
        torch.testing.assert_close(v, u, rtol=1e-10, atol=1e-10, msg=name)


def test_torch_path_one_sided_bias_and_gradcheck():
    x, w0, wu, scale, _, bu = _make(1, 2, 3, 5, 4, 3, "u", False, device="cpu")
    ins = tuple(t.requires_grad_(True) for t in (x, w0, wu, scale, bu))

    def fn(x, w0, wu, s, bu):
        return _torch(x, w0, wu, s, None, bu, 1, 1, 1)

    assert torch.autograd.gradcheck(fn, ins, fast_mode=True)


def test_split_k_weight_gradient_matches_single_pass():
    x, w0, _, scale, _, _ = _make(2, 5, 7, 9, 9, 3, None, True)
    x, scale = x.float(), scale.float()
    dy = torch.randn(2, 7, 9, 9, device=x.device)
    one = hc._launch_dw(x, dy, scale, w0.shape, (1, 1), (1, 1), (1, 1))
    split = hc._launch_dw(x, dy, scale, w0.shape, (1, 1), (1, 1), (1, 1), m_per_split=40)  # 5 splits, ragged
    ref = torch.nn.grad.conv2d_weight(x, w0.shape, dy, 1, 1)
    ref_u = torch.nn.grad.conv2d_weight(x, w0.shape, dy * scale[:, :, None, None], 1, 1)
    for a, b, r in zip(one, split, (ref, ref_u)):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(b, r, rtol=1e-4, atol=1e-4)


def test_partial_grads_and_broadcast_grad_output():
    """Only x needs a gradient (no yu saved); dy from .sum() is an expanded, stride-0 tensor."""
    x, w0, wu, scale, b0, bu = [t.float() for t in _make(2, 5, 7, 6, 6, 3, "both", False)]
    x.requires_grad_(True)
    y = hyper_conv2d(x, w0, wu, scale, b0, bu, 1, 1, 1, impl="triton")
    (dx,) = torch.autograd.grad(y.sum(), [x])
    x2 = x.detach().requires_grad_(True)
    (ref,) = torch.autograd.grad(hyper_conv2d_ref(x2, w0, wu, scale, b0, bu, 1, 1, 1).sum(), [x2])
    torch.testing.assert_close(dx, ref, rtol=1e-4, atol=1e-4)


def test_no_grad_forward_saves_nothing_extra(monkeypatch):
    """Under torch.no_grad() the forward must not write conv(x, wu) for a dscale nobody will ask for."""
    seen = []
    real = hc._launch_fwd
    monkeypatch.setattr(hc, "_launch_fwd", lambda *a: seen.append(a[9]) or real(*a))
    x, w0, wu, scale, _, _ = [None if t is None else t.float() for t in _make(1, 3, 4, 5, 5, 1, None, False)]
    scale.requires_grad_(True)
    with torch.no_grad():
        y = hyper_conv2d(x, w0, wu, scale, impl="triton")
    hyper_conv2d(x, w0, wu, scale, impl="triton")
    assert seen == [False, True]
    torch.testing.assert_close(y, hyper_conv2d_ref(x, w0, wu, scale), rtol=1e-5, atol=1e-5)


def test_auto_uses_torch_off_cuda_and_matches():
    x, w0, wu, scale, b0, bu = [t.float().cpu() for t in _make(2, 3, 4, 5, 5, 3, "both", False)]
    torch.testing.assert_close(hyper_conv2d(x, w0, wu, scale, b0, bu, padding=1),
                               hyper_conv2d_ref(x, w0, wu, scale, b0, bu, padding=1), rtol=1e-5, atol=1e-5)


def test_input_validation_errors(monkeypatch):
    x, w0, wu, scale, b0, _ = [None if t is None else t.float().cpu() for t in _make(2, 3, 4, 5, 5, 3, "both", False)]
    with pytest.raises(ValueError, match="impl must be"):
        hyper_conv2d(x, w0, wu, scale, impl="cudnn")
    with pytest.raises(ValueError, match="x must be"):
        hyper_conv2d(x[0], w0, wu, scale)
    with pytest.raises(ValueError, match="w0 and wu"):
        hyper_conv2d(x, w0, wu[:, :, :1], scale)
    with pytest.raises(ValueError, match="input channels"):
        hyper_conv2d(x[:, :2], w0, wu, scale)
    with pytest.raises(ValueError, match="scale must be"):
        hyper_conv2d(x, w0, wu, scale[:1])
    with pytest.raises(ValueError, match="bias0"):
        hyper_conv2d(x, w0, wu, scale, bias0=b0[:2])
    with pytest.raises(ValueError, match="stride"):
        hyper_conv2d(x, w0, wu, scale, stride=(1, 2, 3))
    with pytest.raises(ValueError, match="dilation >= 1"):
        hyper_conv2d(x, w0, wu, scale, dilation=0)
    with pytest.raises(TypeError, match="share one dtype"):
        hyper_conv2d(x.double(), w0, wu, scale, impl="triton")
    with pytest.raises(ValueError, match="empty"):
        hyper_conv2d(x[:, :, :2, :2], w0, wu, scale, impl="triton")
    monkeypatch.setitem(os.environ, "TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        hyper_conv2d(x, w0, wu, scale, impl="triton")


def _network_conv_shapes() -> list[tuple[int, int, int, int, int]]:
    """Every distinct (Cin, Cout, k, stride, padding) of the real WRN-40-2, WRN-28-10 and ResNet-50 definitions."""
    from torch import nn

    from hba_fast.models import build_model
    from hba_fast.models.layers import HyperConv2d

    shapes = {}
    for name in ("wrn-40-2", "wrn-28-10", "resnet-50"):
        for m in build_model(name, 10, "none").modules():
            if isinstance(m, (nn.Conv2d, HyperConv2d)):
                stride, padding = (v if isinstance(v, int) else v[0] for v in (m.stride, m.padding))
                shapes[(m.in_channels, m.out_channels, m.kernel_size[0], stride, padding)] = None
    return list(shapes)


@pytest.mark.slow
@pytest.mark.parametrize("Cin,Cout,k,stride,padding", _network_conv_shapes())
def test_every_network_conv_in_the_interpreter(Cin, Cout, k, stride, padding):
    """The channel counts, kernel sizes, strides and paddings of every conv of the three nets (stem Cin=3, 160, 2048,
    ...), at batch 2 and the smallest spatial size that exercises the padding and every stride phase."""
    h = max(k, 2 * stride + 1) if k > 1 else 3
    leaves = _make(2, Cin, Cout, h, h, k, "both", True)
    _check(leaves, (stride, padding, 1), torch.float32, _triton)


# ----------------------------------------------------------------------------- GPU: real network shapes

# (Cin, Cout, H, k, stride, padding) from WRN-40-2, WRN-28-10 (32x32 input) and ResNet-50 (224 input);
# batch 8 keeps the fp64 truth cheap.
NET_SHAPES = [
    (3, 16, 32, 3, 1, 1), (16, 32, 32, 3, 1, 1), (32, 64, 32, 3, 2, 1), (64, 128, 16, 3, 2, 1),
    (128, 128, 8, 3, 1, 1), (16, 160, 32, 1, 1, 0), (160, 320, 32, 3, 2, 1), (320, 640, 16, 1, 2, 0),
    (640, 640, 8, 3, 1, 1), (3, 64, 224, 7, 2, 3), (64, 64, 56, 1, 1, 0), (64, 256, 56, 1, 1, 0),
    (128, 128, 56, 3, 2, 1), (512, 1024, 28, 1, 2, 0), (1024, 256, 14, 1, 1, 0), (512, 512, 7, 3, 1, 1),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("Cin,Cout,H,k,stride,padding", NET_SHAPES)
def test_gpu_network_shapes(Cin, Cout, H, k, stride, padding, dtype):
    leaves = _make(8, Cin, Cout, H, H, k, "both", True)
    _check(leaves, (stride, padding, 1), dtype, _triton)


@pytest.mark.gpu
def test_gpu_fp32_nchw_and_autocast():
    leaves = _make(4, 37, 29, 15, 15, 3, "both", False)
    _check(leaves, (1, 1, 1), torch.float32, _triton)
    x, w0, wu, scale, b0, bu = [t.float() for t in leaves]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = hyper_conv2d(x, w0, wu, scale, b0, bu, 1, 1)
        ref = hyper_conv2d(x, w0, wu, scale, b0, bu, 1, 1, impl="torch")
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref.float(), rtol=3e-2, atol=3e-2)



def test_triton_under_autocast_matches_torch_path():
    """Under torch.autocast the kernel runs in the autocast dtype (as F.conv2d would) and the gradients flow back to
    the fp32 leaves in fp32; CPU autocast with fp16 keeps this on the interpreter (its bf16 tl.dot is broken).
    Same rule as _check, with the autocast torch path as the baseline and the fp64 reference as the truth."""
    leaves = _make(2, 6, 8, 7, 7, 3, "both", True)
    results = []
    for fn in (hyper_conv2d_ref, _triton, _torch):
        ins = [t.detach().to(torch.float64 if fn is hyper_conv2d_ref else torch.float32).requires_grad_(True)
               for t in leaves]
        with torch.autocast(leaves[0].device.type, dtype=torch.float16, enabled=fn is not hyper_conv2d_ref):
            y = fn(*ins, 1, 1, 1)
        grads = torch.autograd.grad(y.double().square().sum(), ins)
        if fn is not hyper_conv2d_ref:
            assert y.dtype == torch.float16 and y.is_contiguous(memory_format=torch.channels_last)
            assert all(g.dtype == torch.float32 for g in grads)
        results.append((y, *grads))
    for name, t, k, p in zip(NAMES, *results):
        err_k, err_p = (k.double() - t).abs().max().item(), (p.double() - t).abs().max().item()
        assert err_k <= 2 * err_p + ATOL[torch.float16] * t.abs().max().item(), (name, err_k, err_p)
