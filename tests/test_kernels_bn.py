"""Fused hyper batch norm (hba_fast/kernels/hyper_bn.py) against the pure-torch reference.

Rule (flash-attention's): with the fp64 reference as the truth, the kernel's error at a dtype must be at most
2 x the error of plain torch (the reference run at that dtype) + atol, for y, dx, dgamma, dbeta and the
running statistics. On the CPU the kernels run under TRITON_INTERPRET=1 (tests/conftest.py) in fp32 on small,
odd shapes; the bf16/fp16 tests on real layer shapes need a GPU.
"""
import pytest
import torch

from hba_fast.kernels import hyper_batch_norm, hyper_batch_norm_ref
from hba_fast.kernels import hyper_bn as hbn

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MOMENTUM, EPS = 0.1, 1e-5


def _inputs(shape, channels_last=False, loc=0.5, scale=2.0, seed=0, device=DEVICE):
    """x (B, C, H, W) in fp32 with a per-channel offset, gamma/beta (B, C), running stats (C,), dy like x."""
    g = torch.Generator().manual_seed(seed)
    B, C = shape[:2]
    x = loc + scale * torch.randn(shape, generator=g) + torch.randn(1, C, 1, 1, generator=g)
    gamma = 1.0 + 0.5 * torch.randn(B, C, generator=g)
    beta = 0.5 * torch.randn(B, C, generator=g)
    rm, rv = 0.1 * torch.randn(C, generator=g), 0.5 + torch.rand(C, generator=g)
    dy = torch.randn(shape, generator=g)
    out = [t.to(device) for t in (x, gamma, beta, rm, rv, dy)]
    if channels_last:
        out[0] = out[0].contiguous(memory_format=torch.channels_last)
    return out


def _run(fn, x, gamma, beta, rm, rv, dy, training, dtype, momentum=MOMENTUM):
    """fn at `dtype` (x, gamma, beta cast; running stats stay fp32): y, dx, dgamma, dbeta, running mean, var."""
    memfmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 \
        else torch.contiguous_format
    xd = x.detach().to(dtype, copy=True).contiguous(memory_format=memfmt).requires_grad_()
    gd, bd = gamma.to(dtype, copy=True).requires_grad_(), beta.to(dtype, copy=True).requires_grad_()
    rmd = rm.clone() if dtype != torch.float64 else rm.double()
    rvd = rv.clone() if dtype != torch.float64 else rv.double()
    y = fn(xd, gd, bd, rmd, rvd, training, momentum, EPS)
    y.backward(dy.to(dtype))
    return y, xd.grad, gd.grad, bd.grad, rmd, rvd


def _triton(*args):
    return hyper_batch_norm(*args, impl="triton")


def _check_rule(x, gamma, beta, rm, rv, dy, training, dtype, atol):
    """Kernel vs fp64 truth within 2 x (plain torch at dtype vs truth) + atol * scale of each output."""
    truth = _run(hyper_batch_norm_ref, x, gamma, beta, rm, rv, dy, training, torch.float64)
    base = _run(hyper_batch_norm_ref, x, gamma, beta, rm, rv, dy, training, dtype)
    ours = _run(_triton, x, gamma, beta, rm, rv, dy, training, dtype)
    for name, t, b, o in zip(("y", "dx", "dgamma", "dbeta", "running_mean", "running_var"), truth, base, ours):
        assert o.dtype == b.dtype, f"{name}: dtype {o.dtype}, torch gives {b.dtype}"
        assert o.shape == t.shape, f"{name}: shape {tuple(o.shape)}, expected {tuple(t.shape)}"
        err_ours = (o.double() - t).abs().max().item()
        err_base = (b.double() - t).abs().max().item()
        tol = 2 * err_base + atol * (1.0 + t.abs().max().item())
        assert err_ours <= tol, f"{name}: kernel error {err_ours:.3g} > 2 x torch error {err_base:.3g} + atol"
    y, dx = ours[0], ours[1]
    if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1:
        assert y.is_contiguous(memory_format=torch.channels_last) and dx.is_contiguous(
            memory_format=torch.channels_last), "y and dx keep x's channels_last layout"
    return ours


# Odd C, odd H/W; B*H*W and H*W not multiples of the blocks; C > 128 gives several channel blocks in
# channels_last; 1x1 planes stack many channels per tile.
SHAPES = [(3, 5, 7, 9), (2, 3, 33, 31), (4, 131, 3, 5), (5, 6, 1, 1)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_matches_reference_fp32(shape, channels_last, training):
    x, gamma, beta, rm, rv, dy = _inputs(shape, channels_last)
    _check_rule(x, gamma, beta, rm, rv, dy, training, torch.float32, atol=1e-5)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_of_one(training):
    """B = 1: eval mode is the common case (one image); training normalises over H*W alone."""
    x, gamma, beta, rm, rv, dy = _inputs((1, 3, 5, 7))
    _check_rule(x, gamma, beta, rm, rv, dy, training, torch.float32, atol=1e-5)


@pytest.mark.parametrize("tiny_tiles", [False, True], ids=["heuristic_tiles", "tiny_tiles"])
def test_many_splits_and_stable_variance(monkeypatch, tiny_tiles):
    """Reductions cut into many partial programs (tiny tiles: > 64 splits, so the finalize kernel combines
    several chunks of splits); mean 100 with std 0.1, where fp32 E[x^2] - E[x]^2 would fail the rule."""
    target = 400 if tiny_tiles else 96
    monkeypatch.setattr(hbn, "_num_programs_target", lambda device: target)
    if tiny_tiles:
        monkeypatch.setattr(hbn, "_tiles", lambda C, S, channels_contiguous: (4, 8, 4))
    x, gamma, beta, rm, rv, dy = _inputs((2 if tiny_tiles else 6, 3, 16, 20), loc=1e2, scale=1e-1, seed=3)
    x = x - x.mean((0, 2, 3), keepdim=True) + 1e2  # the same large offset in every channel
    B, C, H, W = x.shape
    n_splits, _ = hbn._splits(B * hbn.triton.cdiv(H * W, hbn._tiles(C, H * W, False)[1]), 1, x.device)
    assert n_splits >= (65 if tiny_tiles else 6), "the test must exercise the split-and-combine path"
    _check_rule(x, gamma, beta, rm, rv, dy, True, torch.float32, atol=1e-5)
    if tiny_tiles:
        return  # the interpreter is slow with tiny tiles; the rest runs on the heuristic tiles
    ones = torch.ones(B, C, device=x.device)
    xhat = hyper_batch_norm(x, ones, 0 * ones, None, None, True, MOMENTUM, EPS, impl="triton").double()
    var = x.double().var((0, 2, 3), unbiased=False)  # ~1e-2, so eps matters a little: var(xhat) = var / (var + eps)
    torch.testing.assert_close(xhat.var((0, 2, 3), unbiased=False), var / (var + EPS), atol=2e-3, rtol=0)
    torch.testing.assert_close(xhat.mean((0, 2, 3)), 0 * ones[0].double(), atol=2e-3, rtol=0)
    _check_rule(x.contiguous(memory_format=torch.channels_last), gamma, beta, rm, rv, dy, True, torch.float32, 1e-5)


@pytest.mark.parametrize("cols", [slice(None, None, 2), slice(1, 6)], ids=["strided_view", "unmergeable_view"])
def test_mixed_layouts_and_views(cols):
    """dy in channels_last while x is NCHW; x a view with W stride 2 (H, W still merge: no copy) or a column
    window whose H and W cannot be merged (copied into a standard layout first)."""
    x, gamma, beta, rm, rv, _ = _inputs((2, 4, 6, 10))
    dy = torch.randn(2, 6, 10, 4, device=DEVICE).permute(0, 3, 1, 2)  # (B, C, H, W), channels_last strides
    _check_rule(x, gamma, beta, rm, rv, dy, True, torch.float32, atol=1e-5)
    assert (hbn._bcs_strides(x[:, :, :, cols]) is None) == (cols.start == 1)
    outs = []
    for fn in (hyper_batch_norm_ref, _triton):
        xi = x[:, :, :, cols].requires_grad_()  # (2, 4, 6, 5)
        gi, bi = gamma.clone().requires_grad_(), beta.clone().requires_grad_()
        y = fn(xi, gi, bi, rm.clone(), rv.clone(), True, MOMENTUM, EPS)
        y.backward(dy[:, :, :, cols])
        outs.append((y, xi.grad, gi.grad, bi.grad))
    for ours, ref in zip(outs[1], outs[0]):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)


def test_running_stats_semantics():
    """momentum 0 leaves the running stats bitwise alone; None running stats: batch stats, nothing updated."""
    x, gamma, beta, rm, rv, _ = _inputs((2, 3, 4, 5))
    rm0, rv0 = rm.clone(), rv.clone()
    hyper_batch_norm(x, gamma, beta, rm, rv, True, 0.0, EPS, impl="triton")
    assert torch.equal(rm, rm0) and torch.equal(rv, rv0)
    y = hyper_batch_norm(x, gamma, beta, None, None, True, MOMENTUM, EPS, impl="triton")
    torch.testing.assert_close(y, hyper_batch_norm_ref(x, gamma, beta, None, None, True, MOMENTUM, EPS))
    # momentum 1 replaces them by the batch statistics (unbiased variance)
    hyper_batch_norm(x, gamma, beta, rm, rv, True, 1.0, EPS, impl="triton")
    torch.testing.assert_close(rm, x.mean((0, 2, 3)))
    torch.testing.assert_close(rv, x.var((0, 2, 3), unbiased=True))


def test_gradients_only_where_needed_and_deterministic():
    """x without grad (first layer), gamma with: dgamma right, no dx; two runs agree bitwise."""
    x, gamma, beta, rm, rv, dy = _inputs((3, 4, 5, 6))
    grads = []
    for _ in range(2):
        g = gamma.clone().requires_grad_()
        y = hyper_batch_norm(x, g, beta, rm.clone(), rv.clone(), True, MOMENTUM, EPS, impl="triton")
        y.backward(dy)
        grads.append(g.grad)
    assert torch.equal(grads[0], grads[1])
    g = gamma.clone().requires_grad_()
    hyper_batch_norm_ref(x, g, beta, rm.clone(), rv.clone(), True, MOMENTUM, EPS).backward(dy)
    torch.testing.assert_close(grads[0], g.grad, atol=1e-4, rtol=1e-5)


def test_shared_affine_expanded():
    """The validation step's single lambda: gamma, beta (C,) expanded to (B, C) with stride 0 along B."""
    x, gamma, beta, rm, rv, dy = _inputs((3, 4, 5, 6))
    grads = []
    for fn in (hyper_batch_norm_ref, _triton):
        g0, b0 = gamma[0].clone().requires_grad_(), beta[0].clone().requires_grad_()
        y = fn(x, g0.expand(3, -1), b0.expand(3, -1), rm.clone(), rv.clone(), False, MOMENTUM, EPS)
        y.backward(dy)
        grads.append((y, g0.grad, b0.grad))
    for ours, ref in zip(grads[1], grads[0]):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)


def test_torch_path_and_auto():
    """impl='torch' (the CPU path) equals the reference and keeps channels_last; 'auto' picks it on the CPU."""
    x, gamma, beta, rm, rv, _ = _inputs((2, 3, 4, 5), channels_last=True, device="cpu")
    for impl in ("torch", "auto"):
        y = hyper_batch_norm(x, gamma, beta, rm.clone(), rv.clone(), True, MOMENTUM, EPS, impl=impl)
        torch.testing.assert_close(y, hyper_batch_norm_ref(x, gamma, beta, rm.clone(), rv.clone(), True, MOMENTUM, EPS))
        assert y.is_contiguous(memory_format=torch.channels_last)


def _bad_calls():
    x, g, b, rm, rv, _ = _inputs((2, 3, 4, 5), device="cpu")
    ok = {"x": x, "gamma": g, "beta": b, "running_mean": rm, "running_var": rv, "training": True, "momentum": 0.1,
          "eps": 1e-5}
    return [
        (dict(ok, x=x[0]), ValueError, "x must be a floating"),
        (dict(ok, x=x.long()), ValueError, "x must be a floating"),
        (dict(ok, gamma=g[0]), ValueError, "gamma must be a floating"),
        (dict(ok, beta=b[:, :2]), ValueError, "beta must be a floating"),
        (dict(ok, running_var=None), ValueError, "both running_mean and running_var"),
        (dict(ok, running_mean=rm[:2]), ValueError, "running_mean must be a floating"),
        (dict(ok, running_mean=torch.zeros(3, 2)[:, 0]), ValueError, "must be contiguous"),
        (dict(ok, running_mean=None, running_var=None, training=False), ValueError, "eval mode"),
        (dict(ok, momentum=None), ValueError, "num_batches_tracked"),
        (dict(ok, momentum=1.5), ValueError, "momentum must be"),
        (dict(ok, eps=0.0), ValueError, "eps must be"),
        (dict(ok, training=1), TypeError, "training must be a bool"),
        (dict(ok, x=x[:1, :, :1, :1], gamma=g[:1], beta=b[:1]), ValueError, "more than 1 value per channel"),
    ]


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_input_validation(impl, monkeypatch):
    for kwargs, exc, msg in _bad_calls():
        with pytest.raises(exc, match=msg):
            hyper_batch_norm(**kwargs, impl=impl)
    x, g, b, rm, rv, _ = _inputs((2, 3, 4, 5), device="cpu")
    with pytest.raises(ValueError, match="impl must be"):
        hyper_batch_norm(x, g, b, rm, rv, True, 0.1, 1e-5, impl="cuda")
    if impl == "triton":
        with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
            hyper_batch_norm(x.double(), g, b, rm, rv, True, 0.1, 1e-5, impl="triton")
        monkeypatch.setenv("TRITON_INTERPRET", "0")  # CPU tensors without the interpreter: say so, do not crash
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            hyper_batch_norm(x, g, b, rm, rv, True, 0.1, 1e-5, impl="triton")


# ------------------------------------------------------------------------------------------------- GPU only
@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(128, 32, 32, 32), (256, 64, 56, 56), (64, 640, 8, 8), (7, 33, 17, 19)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_matches_reference_gpu(shape, dtype, channels_last, training):
    x, gamma, beta, rm, rv, dy = _inputs(shape, channels_last, device="cuda")
    _check_rule(x, gamma, beta, rm, rv, dy, training, dtype, atol=1e-3)


@pytest.mark.gpu
def test_cuda_graph_capture():
    """No host syncs: forward + backward replay in a CUDA graph and match an eager call."""
    x, gamma, beta, rm, rv, dy = _inputs((8, 16, 12, 12), device="cuda")
    xg, gg = x.clone().requires_grad_(), gamma.clone().requires_grad_()
    rmg, rvg = rm.clone(), rv.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up (compiles the kernels) outside the graph
        hyper_batch_norm(xg, gg, beta, rmg.clone(), rvg.clone(), True, MOMENTUM, EPS).backward(dy)
    torch.cuda.current_stream().wait_stream(stream)
    xg.grad = gg.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = hyper_batch_norm(xg, gg, beta, rmg, rvg, True, MOMENTUM, EPS)
        y.backward(dy)
    graph.replay()
    torch.cuda.synchronize()
    ref = _run(hyper_batch_norm_ref, x, gamma, beta, rm, rv, dy, True, torch.float32)
    torch.testing.assert_close(y, ref[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(xg.grad, ref[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gg.grad, ref[2], atol=1e-3, rtol=1e-4)
