"""Model zoo: parameter counts against the published models, which layers each strategy makes hyper,
lam threading and gradients, materialize == the hyper model for a shared lam, channels_last, errors."""
import pytest
import torch
from torch import nn

from hba_fast.models import MODELS, STRATEGIES, build_model, hyper_layer_names, materialize
from hba_fast.models.layers import HyperBatchNorm2d, HyperConv2d, HyperLinear, HyperModule, set_hyper_impl

D = 54
# name -> input size, small enough for CPU (batch 2); resnet-50 at 64x64 still runs every stage.
SMALL = {"wrn-40-2": 32, "resnet-50": 64}
HYPER_STRATEGIES = [s for s in STRATEGIES if s != "none"]


@pytest.fixture(scope="module")
def plain_models():
    torch.manual_seed(0)
    return {name: build_model(name, 10, "none") for name in SMALL}


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, classes, expected", [
    ("wrn-40-2", 10, 2_243_546),  # Zagoruyko & Komodakis: 2.2M
    ("wrn-28-10", 10, 36_479_194),  # 36.5M
    ("resnet-50", 1000, 25_557_032),  # torchvision.models.resnet50
])
def test_plain_parameter_counts_match_published_models(name, classes, expected):
    model = build_model(name, classes, "none")
    assert _count(model) == expected
    assert not hyper_layer_names(model)


def _expected_hyper(plain: nn.Module, name: str, strategy: str) -> list[str]:
    convs = [n for n, m in plain.named_modules() if isinstance(m, nn.Conv2d)]
    bns = [n for n, m in plain.named_modules() if isinstance(m, nn.BatchNorm2d)]
    first_bn = "blocks.0.bn1" if name.startswith("wrn") else "bn1"
    return {
        "all": convs + bns + ["fc"],  # no weight sharing (paper Figure 2 (b))
        "conv+bn": convs + bns, "conv": convs, "bn": bns,  # paper 4.1: the classifier is shared (no hyper-layer)
        "first_conv": ["conv1"], "first_bn": [first_bn], "none": [],
    }[strategy]


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_picks_the_right_layers(plain_models, name, strategy):
    plain = plain_models[name]
    model = build_model(name, 10, strategy)
    assert sorted(hyper_layer_names(model)) == sorted(_expected_hyper(plain, name, strategy))
    # Same architecture: every plain layer has its hyper twin of the same shape, named the same.
    kinds = {nn.Conv2d: HyperConv2d, nn.BatchNorm2d: HyperBatchNorm2d, nn.Linear: HyperLinear}
    hyper_modules = dict(model.named_modules())
    for n, m in plain.named_modules():
        if type(m) in kinds:
            assert type(hyper_modules[n]) in (type(m), kinds[type(m)])
            assert hyper_modules[n].weight.shape == m.weight.shape
    assert _count(model) >= _count(plain)
    plain_keys = set(plain.state_dict())
    assert plain_keys <= set(model.state_dict())  # a plain checkpoint loads into phi0 with strict=False


def test_first_bn_is_the_lowest_bn_in_forward_order(plain_models):
    """first_bn must be the first BN the input meets: record the call order of the plain model's BNs."""
    for name, size in SMALL.items():
        order: list[str] = []
        hooks = [m.register_forward_hook(lambda m, i, o, n=n, order=order: order.append(n))
                 for n, m in plain_models[name].named_modules() if isinstance(m, nn.BatchNorm2d)]
        plain_models[name].eval()(torch.randn(1, 3, size, size))
        for h in hooks:
            h.remove()
        assert order[0] == _expected_hyper(plain_models[name], name, "first_bn")[0]


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_forward_shapes_and_lam_gradient(name, strategy):
    torch.manual_seed(1)
    model = build_model(name, 7, strategy)
    x = torch.randn(2, 3, SMALL[name], SMALL[name])
    lam = torch.randn(2, D, requires_grad=True)
    out = model(x, lam)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    if strategy == "none":
        assert lam.grad is None  # a plain model ignores lam: no lam overhead, no gradient
    else:
        assert lam.grad is not None and lam.grad.abs().sum() > 0
        for n in hyper_layer_names(model):
            layer = model.get_submodule(n)
            assert layer.weight_v.grad is not None and layer.weight_v.grad.abs().sum() > 0, n


def test_wrn_28_10_forward():
    torch.manual_seed(2)
    model = build_model("wrn-28-10", 100, "first_bn")
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32), torch.randn(2, D))
    assert out.shape == (2, 100) and torch.isfinite(out).all()


@pytest.mark.parametrize("name, strategy", [("wrn-40-2", "conv+bn"), ("wrn-40-2", "first_conv"),
                                            ("resnet-50", "conv+bn"), ("resnet-50", "first_bn")])
def test_shared_lam_equals_broadcast_per_sample(name, strategy):
    torch.manual_seed(3)
    model = build_model(name, 10, strategy).double()  # fp64: fp32 rounding is amplified through 50 BN layers
    set_hyper_impl(model, "torch")
    x = torch.randn(3, 3, 16 if name.startswith("wrn") else 32, 16 if name.startswith("wrn") else 32,
                    dtype=torch.float64)  # fp64 convs are slow on CPU: small images
    lam = torch.randn(D, dtype=torch.float64)
    shared = model(x, lam)
    per_sample = model(x, lam.expand(3, D))
    torch.testing.assert_close(shared, per_sample, rtol=1e-9, atol=1e-10)


def _exaggerate_(model: nn.Module) -> None:
    """Make theta(lam) far from phi0, and running stats non-trivial, so materialize has something to get wrong."""
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, HyperModule):
                for p in (m.weight_v, m.bias_v):
                    if p is not None:
                        p.copy_(torch.randn(p.shape, generator=g) * 0.05)
                if isinstance(m, HyperBatchNorm2d):
                    m.bias_u.copy_(torch.randn(m.bias_u.shape, generator=g))


@pytest.mark.parametrize("name, strategy", [("wrn-40-2", "conv+bn"), ("wrn-40-2", "first_conv"),
                                            ("resnet-50", "conv+bn"), ("resnet-50", "first_bn")])
def test_materialize_equals_hyper_model_and_loads_into_plain(name, strategy):
    torch.manual_seed(5)
    size = SMALL[name]
    model = build_model(name, 10, strategy)
    _exaggerate_(model)
    with torch.no_grad():
        model(torch.randn(3, 3, size, size), torch.randn(3, D))  # running statistics from a weight step
    model.eval()
    lam, x = torch.randn(D), torch.randn(2, 3, size, size)
    plain = materialize(model, lam)
    assert not hyper_layer_names(plain) and hyper_layer_names(model)  # the original is left alone
    with torch.no_grad():
        expected = model(x, lam)
        torch.testing.assert_close(plain(x), expected, rtol=1e-4, atol=1e-5)
        build_model(name, 10, "none").load_state_dict(plain.state_dict(), strict=True)  # same class, same keys
        wrong = materialize(model, lam + 1.0)
        assert not torch.allclose(wrong(x), expected, rtol=1e-3, atol=1e-4)


def test_channels_last_is_preserved():
    torch.manual_seed(6)
    model = build_model("wrn-40-2", 10, "conv+bn")
    set_hyper_impl(model, "torch")
    x = torch.randn(2, 3, 32, 32)
    lam = torch.randn(2, D)
    layouts = []
    hooks = [m.register_forward_hook(lambda m, i, o: layouts.append(o.is_contiguous(memory_format=torch.channels_last)))
             for m in model.modules() if isinstance(m, (HyperConv2d, HyperBatchNorm2d))]
    out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last), lam)
    for h in hooks:
        h.remove()
    assert layouts and all(layouts)
    torch.testing.assert_close(out, model(x, lam), rtol=1e-4, atol=1e-5)


def test_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"unknown model name 'wrn-28-1'.*did you mean 'wrn-28-10'") as info:
        build_model("wrn-28-1", 10)
    assert all(n in str(info.value) for n in MODELS)
    with pytest.raises(ValueError, match=r"unknown strategy 'first-bn'.*did you mean 'first_bn'") as info:
        build_model("wrn-40-2", 10, "first-bn")
    assert all(s in str(info.value) for s in STRATEGIES)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("wrn-40-2", 0)
    model = build_model("wrn-40-2", 10, "first_bn")
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"forward needs lam: \(2, 54\) per sample or \(54,\) shared"):
        model(x)
    with pytest.raises(ValueError, match="3 rows but the batch has 2"):
        model(x, torch.zeros(3, D))
    with pytest.raises(ValueError, match=r"shared lam of shape \(54,\)"):
        materialize(model, torch.zeros(2, D))
    assert build_model("wrn-40-2", 10, "none")(x).shape == (2, 10)  # a plain model needs no lam


@pytest.mark.gpu
@pytest.mark.parametrize("strategy", ["conv+bn", "first_bn"])
def test_cuda_channels_last_auto_impl_matches_torch_path(strategy):
    """On a GPU `impl="auto"` runs the Triton kernels: the model must agree with the pure-torch path."""
    torch.manual_seed(7)
    model = build_model("wrn-40-2", 10, strategy).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 32, 32, device="cuda").to(memory_format=torch.channels_last)
    lam = torch.randn(8, D, device="cuda", requires_grad=True)
    results = []
    for impl in ("torch", "auto"):
        set_hyper_impl(model, impl)
        out = model(x, lam)
        (lam_grad,) = torch.autograd.grad(out.logsumexp(1).sum(), [lam])
        results.append((out, lam_grad))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize("strategy", ["none", "first_bn", "conv+bn"])
def test_model_checkpoint_for_builtin_models(tmp_path, caplog, strategy):
    """model.checkpoint works for the zoo as for torchvision:/timm: models (it was ignored for them): the file's
    tensors go into the model (a hyper-layer's phi0 takes the plain layer's `weight` / `bias`), tensors of another
    shape stay fresh and are named in the log; phiU / phiV stay fresh."""
    import logging

    torch.manual_seed(1)
    source = build_model("wrn-16-2", 5, "none")  # a classifier for 5 classes
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)  # unlike any fresh init
    torch.save({"model": "wrn-16-2", "state_dict": source.state_dict()}, tmp_path / "model.pt")  # a model.pt
    torch.manual_seed(2)
    fresh = build_model("wrn-16-2", 10, strategy)
    torch.manual_seed(2)
    with caplog.at_level(logging.INFO, logger="hba_fast"):
        model = build_model("wrn-16-2", 10, strategy, checkpoint=str(tmp_path / "model.pt"))
    own, src, init = model.state_dict(), source.state_dict(), fresh.state_dict()
    loaded = [k for k in src if k in own and own[k].shape == src[k].shape]
    assert len(loaded) > 20
    for k in loaded:
        assert torch.equal(own[k], src[k]), k
    assert torch.equal(own["fc.weight"], init["fc.weight"]) and own["fc.weight"].shape == (10, 128)
    for k in own:
        if k.endswith(("weight_u", "weight_v", "bias_u", "bias_v")):
            assert torch.equal(own[k], init[k]), k
    assert "fc.weight" in caplog.text and "fc.bias" in caplog.text  # named, not silently dropped
    assert f"{len(loaded)} tensor(s) loaded from {tmp_path / 'model.pt'}" in caplog.text
