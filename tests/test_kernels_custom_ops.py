"""The Triton hyper-layer launches as torch.library custom ops: torch.compile traces the hyper-layers without a graph
break (both implementations; the Triton one through the interpreter here), AOTAutograd differentiates through the
registered formulas to the eager gradients, and `torch.library.opcheck` accepts every op (schema, fake tensors,
autograd registration, AOT dispatch with dynamic shapes). Tiny shapes: seconds on the CPU."""
import pytest
import torch

from hba_fast.kernels import hyper_bn as hb
from hba_fast.kernels import hyper_conv as hc
from hba_fast.models.layers import HyperBatchNorm2d, HyperConv2d, HyperLinear

LAYERS = {
    "conv": lambda: HyperConv2d(4, 6, 3, stride=1, padding=1, bias=True, lam_dim=54),
    "conv_s2": lambda: HyperConv2d(4, 6, 1, stride=2, padding=0, bias=False, lam_dim=54),
    "bn": lambda: HyperBatchNorm2d(4, lam_dim=54),
    "linear": lambda: HyperLinear(4, 5, lam_dim=54),
}


@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_hyper_layers_compile_in_one_graph(name, impl, channels_last):
    if name == "linear" and channels_last:
        pytest.skip("no memory format for (B, F) inputs")
    torch.manual_seed(0)
    layer = LAYERS[name]()
    layer.impl = impl
    x = torch.randn(3, 4, 5, 5) if name != "linear" else torch.randn(3, 4)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    lam = torch.randn(3, 54)
    twin = LAYERS[name]()
    twin.load_state_dict(layer.state_dict())
    twin.impl = impl
    torch._dynamo.reset()
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)  # fullgraph: a graph break is an error
    outs = []
    for module in (layer, compiled):
        xi = x.clone().requires_grad_(True)
        y = module(xi, lam)
        params = [p for p in (twin if module is compiled else layer).parameters()]
        grads = torch.autograd.grad((y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum(), [xi, *params])
        outs.append((y, grads))
    (y, grads), (cy, cgrads) = outs
    torch.testing.assert_close(cy, y, rtol=1e-5, atol=1e-5)
    for a, b in zip(cgrads, grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for (k, a), b in zip(layer.named_buffers(), twin.buffers()):  # BN running statistics updated alike
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=k)


def _check(op, args):
    result = torch.library.opcheck(op, args)
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.parametrize(("channels_last", "bias"), [(False, False), (True, True)])
def test_conv_ops_pass_opcheck(channels_last, bias):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w0, wu = torch.randn(4, 3, 3, 3), torch.randn(4, 3, 3, 3)
    w0, wu = (w.contiguous(memory_format=torch.channels_last) for w in (w0, wu))
    scale = torch.randn(2, 4)
    b0 = torch.randn(4, requires_grad=True) if bias else None
    bu = torch.randn(4, requires_grad=True) if bias else None
    conv = ([2, 2], [1, 1], [1, 1])
    for save_yu in (True, False):
        args = (x.requires_grad_(True), w0.requires_grad_(True), wu.requires_grad_(True),
                scale.requires_grad_(save_yu), b0, bu, *conv, save_yu, channels_last)
        _check(hc._fwd_op, args)
    dy = torch.randn(2, 4, 3, 3)
    _check(hc._dx_op, (dy, w0.detach(), wu.detach(), scale.detach(), x.detach(), *conv, channels_last))
    _check(hc._dw_op, (x.detach(), dy, scale.detach(), w0.detach(), *conv))
    _check(hc._dscale_op, (dy, torch.randn(2, 4, 3, 3)))
    _check(hc._dscale_op, (dy, None))


@pytest.mark.parametrize("training", [True, False])
def test_bn_ops_pass_opcheck(training):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 5)
    _check(hb._stats_op, (x, torch.zeros(4), torch.ones(4), training, 0.1, 1e-5))
    if training:
        _check(hb._stats_op, (x, None, None, True, 0.1, 1e-5))
    mean, rstd = hb._stats_op(x, torch.zeros(4), torch.ones(4), training, 0.1, 1e-5)
    gamma, beta = torch.randn(3, 4), torch.randn(3, 4)
    _check(hb._apply_op, (x.requires_grad_(True), gamma.requires_grad_(True), beta.requires_grad_(True), mean, rstd,
                          training))
    dy = torch.randn(3, 4, 5, 5)
    for need_dx, need_affine in ((True, True), (True, False), (False, True)):
        _check(hb._bwd_op, (dy, x.detach(), gamma.detach(), mean, rstd, training, need_dx, need_affine,
                            torch.float32))
