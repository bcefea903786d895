"""The paper's evaluation models: Shake-Shake 26 2x{32,96,112}d and PyramidNet-272 + ShakeDrop. Parameter counts
against the published ones, the strategies' hyper-layers, and the randomness of shake-shake and ShakeDrop in the
forward pass (random per sample in training, the expected value in eval) and the backward pass (independent)."""
import pytest
import torch
from torch import nn

from hba_fast.models import build_model, hyper_layer_names, materialize
from hba_fast.models.layers import HyperBatchNorm2d, HyperConv2d
from hba_fast.models.pyramidnet import PyramidNet, shake_drop
from hba_fast.models.shake_shake import ShakeShake, shake_shake

N = 4000  # samples for the statistics


def _count(model: nn.Module, skip_bn: bool = False) -> int:
    return sum(p.numel() for m in model.modules() for p in m.parameters(recurse=False)
               if not (skip_bn and isinstance(m, nn.BatchNorm2d)))


@pytest.mark.parametrize("name, published, exact", [
    ("shake-shake-26-2x32d", 2.9e6, 2_923_162),  # Gastaldi 2017 / AutoAugment Table 2
    ("shake-shake-26-2x96d", 26.2e6, 26_192_922),
    ("shake-shake-26-2x112d", 35.7e6, 35_640_442),  # 35.68M with 100 classes; see shake_shake.py
])
def test_shake_shake_parameter_counts(name, published, exact):
    model = build_model(name, 10, "none")
    assert _count(model) == exact
    assert abs(exact - published) < 0.1e6  # the papers give one decimal of millions


def test_pyramidnet_parameter_count():
    model = build_model("pyramidnet-272-200", 10, "none")
    assert _count(model) == 26_210_842
    assert round(_count(model, skip_bn=True) / 1e6, 1) == 26.0  # the published 26.0M: conv and linear weights
    assert len(model.blocks) == 90 and model.fc.in_features == 4 * 216  # widths 16 + 200 i / 90, x4 out
    survival = [b.survival for b in model.blocks]
    assert survival[0] == pytest.approx(1 - 0.5 / 90) and survival[-1] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(survival, survival[1:]))


@pytest.mark.parametrize("model_fn", [lambda s: ShakeShake(8, 8, 10, s), lambda s: PyramidNet(11, 12, 10, s)])
@pytest.mark.parametrize("strategy", ["first_bn", "first_conv", "conv+bn", "all"])
def test_strategies_and_lam_gradient(model_fn, strategy):
    torch.manual_seed(0)
    model = model_fn(strategy)
    names = hyper_layer_names(model)
    if strategy == "first_bn":
        assert names == ["bn1"] and isinstance(model.bn1, HyperBatchNorm2d)
    elif strategy == "first_conv":
        assert names == ["conv1"] and isinstance(model.conv1, HyperConv2d)
    else:
        plain = [n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.BatchNorm2d)]
        assert not plain, plain  # every conv and BN is a hyper-layer
        assert ("fc" in names) == (strategy == "all")
    lam = torch.randn(3, 54, requires_grad=True)
    out = model(torch.randn(3, 3, 32, 32), lam)
    assert out.shape == (3, 10)
    out.logsumexp(1).sum().backward()
    assert lam.grad is not None and lam.grad.abs().sum() > 0
    model.eval()  # eval mode is deterministic, so theta(lam) as a plain model gives the same outputs
    x, shared = torch.randn(2, 3, 32, 32), torch.randn(54)
    torch.testing.assert_close(materialize(model, shared)(x), model(x, shared), rtol=1e-4, atol=1e-5)


def test_shake_shake_forward_and_backward_randomness():
    torch.manual_seed(1)
    a, b = torch.randn(N, 1, 1, 1), torch.randn(N, 1, 1, 1)
    a.requires_grad_(True)
    b.requires_grad_(True)
    out = shake_shake(a, b, training=True)
    alpha = ((out - b) / (a - b)).detach().flatten()  # per sample
    assert (alpha >= -1e-4).all() and (alpha <= 1 + 1e-4).all()
    assert abs(alpha.mean() - 0.5) < 0.03 and abs(alpha.var() - 1 / 12) < 0.01  # U(0, 1)
    g = torch.randn(N, 1, 1, 1)
    out.backward(g)
    beta = (a.grad / g).flatten()
    torch.testing.assert_close(a.grad + b.grad, g)  # the two branches share the gradient: beta g, (1 - beta) g
    assert (beta >= -1e-4).all() and (beta <= 1 + 1e-4).all() and abs(beta.mean() - 0.5) < 0.03
    assert abs(torch.corrcoef(torch.stack([alpha, beta]))[0, 1]) < 0.1  # independent of the forward alpha
    # eval: the expected value, deterministic
    x, y = torch.randn(8, 4, 3, 3), torch.randn(8, 4, 3, 3)
    assert torch.equal(shake_shake(x, y, training=False), 0.5 * (x + y))


def test_shake_drop_forward_and_backward_randomness():
    torch.manual_seed(2)
    survival = 0.7
    x = torch.full((N, 2, 1, 1), 2.0, requires_grad=True)
    out = shake_drop(x, survival, training=True)
    scale = (out / 2.0).detach()[:, 0].flatten()
    assert torch.equal(scale, (out / 2.0).detach()[:, 1].flatten())  # one scale per sample
    kept = scale == 1.0
    assert abs(kept.float().mean() - survival) < 0.03
    alpha = scale[~kept]
    assert (alpha >= -1).all() and (alpha <= 1).all() and abs(alpha.mean()) < 0.05  # U(-1, 1)
    out.backward(torch.ones_like(out))
    back = x.grad[:, 0].flatten()
    assert torch.equal(back[kept], torch.ones(int(kept.sum())))
    beta = back[~kept]
    assert (beta >= 0).all() and (beta <= 1).all() and abs(beta.mean() - 0.5) < 0.05  # U(0, 1)
    assert abs(torch.corrcoef(torch.stack([alpha, beta]))[0, 1]) < 0.1  # independent of the forward alpha
    y = torch.randn(5, 3, 2, 2)
    assert torch.equal(shake_drop(y, survival, training=False), survival * y)  # eval: E[scale] = survival


@pytest.mark.parametrize("model_fn", [lambda: ShakeShake(8, 8, 10), lambda: PyramidNet(11, 12, 10)])
def test_models_are_random_in_training_and_deterministic_in_eval(model_fn):
    torch.manual_seed(3)
    model = model_fn()
    x = torch.randn(6, 3, 32, 32)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
