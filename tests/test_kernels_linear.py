"""hyper_linear (hba_fast/kernels/hyper_linear.py), the torch-only sibling of the fused kernels (that file
says why a Triton kernel does not pay), against per-sample materialised weights in fp64, forward and every
gradient, and its input validation."""
import pytest
import torch

from hba_fast.kernels import hyper_linear, hyper_linear_ref


@pytest.mark.parametrize("shared", [False, True], ids=["per_sample", "shared_scale"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_hyper_linear_matches_per_sample_weights(shared, bias):
    g = torch.Generator().manual_seed(1)
    B, n_in, n_out = 5, 7, 3
    args = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True)
            for s in ((B, n_in), (n_out, n_in), (n_out, n_in), (n_out,) if shared else (B, n_out))]
    biases = [torch.randn(n_out, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
              for _ in range(2)]
    dy = torch.randn(B, n_out, generator=g, dtype=torch.float64)
    leaves = args + [b for b in biases if b is not None]
    grads = []
    for fn in (hyper_linear, hyper_linear_ref):
        y = fn(*args, *biases)
        grads.append([y.detach(), *torch.autograd.grad(y, leaves, dy)])
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref)


def test_hyper_linear_validation():
    x, w = torch.randn(4, 6), torch.randn(3, 6)
    with pytest.raises(ValueError, match="x must be a floating"):
        hyper_linear(x[0], w, w, torch.randn(4, 3))
    with pytest.raises(ValueError, match="w0 must be"):
        hyper_linear(x, w.t(), w, torch.randn(4, 3))
    with pytest.raises(ValueError, match="wu must have"):
        hyper_linear(x, w, w[:2], torch.randn(4, 3))
    with pytest.raises(ValueError, match="scale must be"):
        hyper_linear(x, w, w, torch.randn(4, 2))
    with pytest.raises(ValueError, match="biasu must be"):
        hyper_linear(x, w, w, torch.randn(3), None, torch.randn(4))
