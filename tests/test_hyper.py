"""Hyper-layers against an independent reference: each sample run through the plain op with its own
materialised theta(lam_i) = phi0 + diag(phiV lam_i) phiU, written out here from the paper's formula."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hba_fast.models.layers import HyperBatchNorm2d, HyperConv2d, HyperLinear, apply_layer, check_lam, set_hyper_impl

D = 7  # a small lam_dim keeps the tests fast; 54 is exercised in test_models.py
DT = torch.float64
TOL = dict(rtol=1e-9, atol=1e-10)


def _perturb_(layer: nn.Module, seed: int = 0) -> None:
    """Random values everywhere (init has weight_u = 1 / bias_u = 0 for BN, tiny phiV): nothing left trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (0.3 if p.ndim == 2 and p.shape[1] == D else 1))


def _grads(out: torch.Tensor, g: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return torch.autograd.grad((out * g).sum(), inputs)


def _conv_ref(layer: HyperConv2d, x, lam):
    outs = []
    for i in range(x.shape[0]):
        w = layer.weight + (layer.weight_v @ lam[i])[:, None, None, None] * layer.weight_u
        b = None if layer.bias is None else layer.bias + (layer.bias_v @ lam[i]) * layer.bias_u
        outs.append(F.conv2d(x[i : i + 1], w, b, layer.stride, layer.padding))
    return torch.cat(outs)


def _linear_ref(layer: HyperLinear, x, lam):
    outs = []
    for i in range(x.shape[0]):
        w = layer.weight + (layer.weight_v @ lam[i])[:, None] * layer.weight_u
        b = None if layer.bias is None else layer.bias + (layer.bias_v @ lam[i]) * layer.bias_u
        outs.append(F.linear(x[i : i + 1], w, b))
    return torch.cat(outs)


def _bn_ref(layer: HyperBatchNorm2d, x, lam):
    """Batch statistics over (B, H, W) by hand, then each sample's own affine."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    xhat = (x - mean) / torch.sqrt(var + layer.eps)
    outs = []
    for i in range(x.shape[0]):
        gamma = layer.weight + (layer.weight_v @ lam[i]) * layer.weight_u
        beta = layer.bias + (layer.bias_v @ lam[i]) * layer.bias_u
        outs.append(xhat[i : i + 1] * gamma[:, None, None] + beta[:, None, None])
    return torch.cat(outs)


CASES = {
    "conv3x3-bias": (lambda: HyperConv2d(5, 6, 3, stride=1, padding=1, bias=True, lam_dim=D), (3, 5, 7, 9), _conv_ref),
    "conv3x3-s2-nobias": (lambda: HyperConv2d(4, 3, 3, stride=2, padding=1, bias=False, lam_dim=D), (3, 4, 9, 8),
                          _conv_ref),
    "conv1x1-s2": (lambda: HyperConv2d(4, 5, 1, stride=2, padding=0, bias=True, lam_dim=D), (2, 4, 6, 6), _conv_ref),
    "linear-bias": (lambda: HyperLinear(6, 5, bias=True, lam_dim=D), (4, 6), _linear_ref),
    "linear-nobias": (lambda: HyperLinear(6, 3, bias=False, lam_dim=D), (3, 6), _linear_ref),
    "bn": (lambda: HyperBatchNorm2d(5, lam_dim=D), (4, 5, 3, 5), _bn_ref),
}


def _setup(case: str, seed: int = 0):
    make, xshape, ref = CASES[case]
    torch.manual_seed(seed)
    layer = make().to(DT)
    _perturb_(layer, seed)
    set_hyper_impl(layer, "torch")
    x = torch.randn(xshape, dtype=DT, requires_grad=True)
    lam = torch.randn(xshape[0], D, dtype=DT, requires_grad=True)
    return layer, x, lam, ref


@pytest.mark.parametrize("case", list(CASES))
def test_per_sample_forward_and_grads_match_materialised_loop(case):
    layer, x, lam, ref = _setup(case)
    inputs = [x, lam, *layer.parameters()]
    out = layer(x, lam)
    expected = ref(layer, x, lam)
    torch.testing.assert_close(out, expected, **TOL)
    g = torch.randn_like(out)
    for a, b, name in zip(_grads(out, g, inputs), _grads(expected, g, inputs),
                          ["x", "lam", *(n for n, _ in layer.named_parameters())], strict=True):
        torch.testing.assert_close(a, b, **TOL, msg=lambda m, name=name: f"grad of {name}: {m}")


def test_conv_bias_uses_its_own_phiV():
    """Kernel contract has one scale (B, Cout) for weight_u and bias_u; the layer must use bias_v for the bias."""
    layer, x, lam, _ = _setup("conv3x3-bias")
    with torch.no_grad():
        layer.weight_u.zero_()  # the weight part is then lam-independent: only the bias path depends on lam
    out = layer(x, lam)
    plain = F.conv2d(x, layer.weight, None, 1, 1)
    bias_i = layer.bias + (lam @ layer.bias_v.T) * layer.bias_u  # (B, Cout)
    torch.testing.assert_close(out, plain + bias_i[:, :, None, None], **TOL)
    wrong = layer.bias + (lam @ layer.weight_v.T) * layer.bias_u
    assert not torch.allclose(out, plain + wrong[:, :, None, None])


@pytest.mark.parametrize("case", list(CASES))
def test_shared_lam_equals_broadcast_per_sample(case):
    layer, x, lam, _ = _setup(case)
    lam1 = lam[0].detach().clone().requires_grad_(True)
    shared = layer(x, lam1)
    lam_b = lam1.detach().expand(x.shape[0], D).clone().requires_grad_(True)
    per_sample = layer(x, lam_b)
    torch.testing.assert_close(shared, per_sample, **TOL)
    g = torch.randn_like(shared)
    params = list(layer.parameters())
    ga = _grads(shared, g, [x, lam1, *params])
    gb = _grads(per_sample, g, [x, lam_b, *params])
    torch.testing.assert_close(ga[1], gb[1].sum(0), **TOL)  # a shared lam collects every sample's gradient
    for a, b in zip(ga[:1] + ga[2:], gb[:1] + gb[2:], strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("case", list(CASES))
def test_materialize_gives_the_plain_layer(case):
    layer, x, lam, _ = _setup(case)
    plain = layer.materialize(lam[1].detach())
    assert type(plain) in (nn.Conv2d, nn.Linear, nn.BatchNorm2d)
    torch.testing.assert_close(plain(x), layer(x, lam[1].detach()), **TOL)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_bn_running_stats_and_eval_follow_nn_batchnorm(momentum):
    torch.manual_seed(1)
    hyper = HyperBatchNorm2d(4, eps=1e-3, momentum=momentum, lam_dim=D).to(DT)
    hyper.impl = "torch"
    plain = nn.BatchNorm2d(4, eps=1e-3, momentum=momentum).to(DT)
    for step in range(3):
        x = torch.randn(5, 4, 3, 3, dtype=DT) * (step + 1) + step
        hyper(x, torch.randn(5, D, dtype=DT))
        plain(x)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(hyper, name), getattr(plain, name), **TOL)
    hyper.eval()
    plain.eval()
    _perturb_(hyper, 3)
    lam = torch.randn(5, D, dtype=DT)
    x = torch.randn(5, 4, 3, 3, dtype=DT)
    before = hyper.running_mean.clone()
    out = hyper(x, lam)
    torch.testing.assert_close(hyper.running_mean, before, rtol=0, atol=0)  # eval does not update
    xhat = (x - plain.running_mean[:, None, None]) / torch.sqrt(plain.running_var[:, None, None] + 1e-3)
    gamma, beta = hyper.affine(lam)
    torch.testing.assert_close(out, xhat * gamma[:, :, None, None] + beta[:, :, None, None], **TOL)


@pytest.mark.parametrize("plain, hyper, extra", [
    (lambda: nn.Conv2d(3, 4, 3, 1, 1), lambda: HyperConv2d(3, 4, 3, 1, 1), set()),
    (lambda: nn.Conv2d(3, 4, 1, bias=False), lambda: HyperConv2d(3, 4, 1, bias=False), set()),
    (lambda: nn.Linear(5, 2), lambda: HyperLinear(5, 2), set()),
    (lambda: nn.BatchNorm2d(6), lambda: HyperBatchNorm2d(6), {"running_mean", "running_var", "num_batches_tracked"}),
])
def test_plain_state_dict_loads_into_phi0(plain, hyper, extra):
    p, h = plain(), hyper()
    with torch.no_grad():
        for t in p.state_dict().values():
            t.copy_(torch.randn(t.shape).to(t.dtype) if t.is_floating_point() else t + 7)
    result = h.load_state_dict(p.state_dict(), strict=False)
    assert not result.unexpected_keys
    hyper_only = {k for k in h.state_dict() if k.endswith(("_u", "_v"))}
    assert set(result.missing_keys) == hyper_only
    assert all(k in {"weight", "bias"} | extra for k in p.state_dict())
    for k, v in p.state_dict().items():
        torch.testing.assert_close(h.state_dict()[k], v, rtol=0, atol=0)


def test_init_starts_near_phi0_and_lam_gets_a_gradient():
    """STN's init: phiU like phi0, phiV ~ N(0, 0.01^2 / lam_dim); BN phiU = (1, 0)."""
    torch.manual_seed(0)
    conv, lin, bn = HyperConv2d(16, 32, 3, padding=1), HyperLinear(64, 32), HyperBatchNorm2d(32)
    for v in (conv.weight_v, lin.bias_v, bn.weight_v):
        assert v.std().item() == pytest.approx(0.01 / 54**0.5, rel=0.15)
    assert conv.weight_u.std().item() == pytest.approx(conv.weight.std().item(), rel=0.1)
    assert torch.equal(bn.weight_u, torch.ones(32)) and torch.equal(bn.bias_u, torch.zeros(32))
    lam = torch.full((2, 54), -2.94, requires_grad=True)  # the logit of every initial value (SPEC 3)
    y = bn(conv(torch.randn(2, 16, 8, 8), lam), lam)
    y = lin(y.mean(dim=(2, 3)).repeat(1, 2), lam)
    y.square().sum().backward()
    assert lam.grad.abs().min() > 0
    gamma, beta = bn.affine(lam.detach())
    assert torch.equal(beta, torch.zeros_like(beta)) and (gamma - 1).abs().max() < 0.15


@pytest.mark.parametrize("bad, err, text", [
    (torch.zeros(3, D + 1), ValueError, f"(3, {D}) (per sample) or ({D},)"),
    (torch.zeros(2, D), ValueError, "2 rows but the batch has 3"),
    (torch.zeros(1, 3, D), ValueError, "got (1, 3, 7)"),
    (torch.zeros(D + 2), ValueError, f"({D},) (shared)"),
    ([0.0] * D, TypeError, "must be a torch.Tensor"),
])
def test_bad_lam_gives_clear_errors(bad, err, text):
    for layer, x in ((HyperConv2d(2, 2, 1, lam_dim=D), torch.zeros(3, 2, 4, 4)),
                     (HyperLinear(2, 2, lam_dim=D), torch.zeros(3, 2)),
                     (HyperBatchNorm2d(2, lam_dim=D), torch.zeros(3, 2, 4, 4))):
        with pytest.raises(err) as info:
            layer(x, bad)
        assert text in str(info.value) and type(layer).__name__ in str(info.value)


def test_helpers():
    assert check_lam(torch.zeros(4, D), 4, D) is True and check_lam(torch.zeros(D), 4, D) is False
    with pytest.raises(ValueError, match="impl must be one of"):
        set_hyper_impl(HyperLinear(2, 2), "cuda")
    relu = nn.ReLU()
    x = torch.randn(2, 3)
    torch.testing.assert_close(apply_layer(relu, x, torch.zeros(2, D)), relu(x))


@pytest.mark.parametrize("case", ["conv3x3-bias", "bn"])
def test_triton_impl_through_the_layer_matches_reference(case):
    """The layers' use of the kernel contract (scale, bias=None, running stats), on the Triton path: fp32, tiny
    shapes, CPU under TRITON_INTERPRET=1 (tests/conftest.py) or the GPU."""
    pytest.importorskip("triton")
    layer, x, lam, ref = _setup(case)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    layer = layer.float().to(device)
    x, lam = x.detach().float().to(device).requires_grad_(), lam.detach().float().to(device).requires_grad_()
    set_hyper_impl(layer, "triton")
    out = layer(x, lam)
    expected = ref(layer, x, lam)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(out)
    inputs = [x, lam, *layer.parameters()]
    for a, b in zip(_grads(out, g, inputs), _grads(expected, g, inputs), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["conv3x3-bias", "conv3x3-s2-nobias", "bn"])
def test_cuda_auto_impl_matches_torch_path(case):
    layer, x, lam, _ = _setup(case)
    layer, x, lam = layer.float().cuda(), x.detach().float().cuda().requires_grad_(), lam.detach().float().cuda()
    outs = []
    for impl in ("torch", "auto"):
        set_hyper_impl(layer, impl)
        out = layer(x, lam)
        outs.append((out, *_grads(out, torch.ones_like(out), [x, *layer.parameters()])))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
